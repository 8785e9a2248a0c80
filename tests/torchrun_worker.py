"""What test_distributed.py starts under torchrun: one script's main(), as `torchrun SCRIPT.py`
would run it, with three additions for the tests. At the end of training each process saves what it
holds (weights, statistics, episodes) in OUT/process-<rank>.pt, so the test can compare the
processes, and once main() has returned, how many threads it still runs in OUT/threads-<rank>
(Linux). With DIE_AFTER=k in its environment, process 1 dies after iteration k, as a process
killed by the machine would (no Python clean-up).

    python -m torch.distributed.run --nproc-per-node 2 tests/torchrun_worker.py SCRIPT OUT [flags]
"""
import importlib
import os
import sys

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import toy_envs  # noqa: E402,F401  (registers the tests/ envs)

script = importlib.import_module(sys.argv[1])
out = sys.argv[2]
finish, iteration = script.RunLog.finish, script.RunLog.iteration


def finish_and_keep(self, device):
    scaler = self.reward_scaler
    torch.save({"model": self.agent.state_dict(), "episodes": self.episodes,
                "reward_rms": scaler.rms.state_dict() if scaler is not None else None},
               os.path.join(out, f"process-{self.rank}.pt"))
    return finish(self, device)


def iteration_or_death(self, number, *rest):
    iteration(self, number, *rest)
    if self.rank == 1 and number == int(os.environ.get("DIE_AFTER", "0")):
        os._exit(3)


script.RunLog.finish = finish_and_keep
script.RunLog.iteration = iteration_or_death
script.main(tyro.cli(script.Args, args=sys.argv[3:]))
if os.path.isdir("/proc/self/task"):
    with open(os.path.join(out, f"threads-{os.environ['RANK']}"), "w") as f:
        f.write(str(len(os.listdir("/proc/self/task"))))
