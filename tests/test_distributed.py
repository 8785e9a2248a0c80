"""Several processes under torchrun (README, "Past one machine"), on CPU with gloo, as CI runs
them: two processes keep identical weights and merged statistics, learn CartPole on the budget
one process needs, run as two "nodes" on one machine, refuse bad input in one line, and stop
together, the first saving its checkpoint, when one dies or torchrun is told to stop."""
import glob
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY

WORKER = os.path.join(ROOT, "tests", "torchrun_worker.py")
# torchrun sets OMP_NUM_THREADS=1 anyway, and says so in six lines unless it is set
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def torchrun(*flags):
    return [sys.executable, "-m", "torch.distributed.run", *flags]


def cli(settings):
    """--flag value pairs (--flag / --no-flag for booleans) from Args keyword arguments."""
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags += [flag, str(value)]
    return flags


def run_two(tmp_path, name, settings, extra_env=None, timeout=600):
    """`torchrun --nproc-per-node 2` of the worker; returns the finished process."""
    out = tmp_path / "out"
    out.mkdir()
    flags = cli({**settings, "run_dir": str(tmp_path / "runs")})
    return subprocess.run(torchrun("--nproc-per-node", "2", WORKER, name, str(out), *flags),
                          cwd=tmp_path, env={**ENV, **(extra_env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def held(tmp_path):
    return [torch.load(tmp_path / "out" / f"process-{rank}.pt", weights_only=True)
            for rank in (0, 1)]


def assert_identical(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def assert_only_the_main_thread_is_left(tmp_path):
    """Once main() has returned, the process group's threads are gone: a gloo thread still
    running as the interpreter exits can abort it (SIGABRT), now and then, which torchrun reports
    as the run failing (and a second node waits minutes for the first)."""
    if sys.platform.startswith("linux"):  # counted in /proc
        threads = [(tmp_path / "out" / f"threads-{rank}").read_text() for rank in (0, 1)]
        assert threads == ["1", "1"]


def exchange(rank, folder):
    """One of two processes: each holds half of the same data, and merges it with the other's."""
    import ppo
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous",
                                         rank=rank, world_size=2)
    rng = np.random.default_rng(0)
    advantages = torch.from_numpy(rng.normal(3.0, 2.0, (2, 64)))[rank]
    rms = ppo.RunningMeanStd((3,))
    for batch in rng.normal(5.0, 3.0, (4, 2, 8, 3)):
        rms.update(torch.from_numpy(batch[rank]))
    weight = torch.nn.Parameter(torch.zeros(2, 3))
    weight.grad = torch.full((2, 3), float(rank + 1))
    ppo.average_gradients([weight])
    torch.save({"advantages": ppo.normalize_advantages(advantages), "grad": weight.grad,
                "rms": rms.state_dict()}, os.path.join(folder, f"{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_processes_merge_to_what_one_would_compute(tmp_path):
    """Against numpy over the whole of the data: the minibatch's advantage normalisation, the
    running statistics and the averaged gradient."""
    torch.multiprocessing.spawn(exchange, args=(str(tmp_path),), nprocs=2)
    first, second = (torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1))
    rng = np.random.default_rng(0)
    advantages = rng.normal(3.0, 2.0, (2, 64))
    expected = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
    merged = torch.stack([first["advantages"], second["advantages"]]).numpy()
    np.testing.assert_allclose(merged, expected, rtol=1e-10)
    stream = rng.normal(5.0, 3.0, (4, 2, 8, 3)).reshape(-1, 3)
    for held in (first, second):
        np.testing.assert_allclose(held["rms"]["mean"], stream.mean(0), rtol=1e-10)
        np.testing.assert_allclose(held["rms"]["var"], stream.var(0), rtol=1e-10)
        assert held["rms"]["count"] == len(stream)
        assert torch.equal(held["grad"], torch.full((2, 3), 1.5))


@pytest.mark.parametrize("name", ["ppo_continuous", "ppo_atari_carracing"])
def test_two_processes_hold_identical_weights_and_merged_statistics(tmp_path, name):
    """ppo_continuous.py normalises observations and scales rewards by default: each process's
    statistics count the steps of both, so both normalise alike."""
    settings = {**TINY[name], "norm_reward": True}
    result = run_two(tmp_path, name, settings)
    assert result.returncode == 0, result.stderr
    assert_only_the_main_thread_is_left(tmp_path)
    first, second = held(tmp_path)
    assert_identical(first["model"], second["model"])
    assert_identical(first["reward_rms"], second["reward_rms"])
    steps = settings["total_timesteps"]
    assert first["reward_rms"]["count"] == steps  # every step of both processes, once
    if name == "ppo_continuous":
        assert first["model"]["obs_rms.count"] == steps
    assert first["episodes"] == second["episodes"] and first["episodes"]
    [summary] = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))  # one run, one writer
    summary = json.load(open(summary))
    assert summary["global_step"] == steps
    # an ordinary checkpoint: one process evaluates it to the score the run's end gave
    script = importlib.import_module(name)
    evaluated = script.evaluate_checkpoint(script.Args(eval_checkpoint=summary["checkpoint"],
                                                       eval_episodes=settings["eval_episodes"]))
    assert evaluated["eval_greedy_mean"] == summary["eval_greedy_mean"]


def test_two_processes_with_two_envs_each_learn_cartpole_on_one_processs_budget(tmp_path):
    """test_reliability.py's CartPole budget: 200k steps of 4 envs x 128 steps in one process."""
    settings = {"env_id": "CartPole-v1", "seed": 1, "num_envs": 4, "total_timesteps": 200_000,
                "eval_episodes": 20}
    result = run_two(tmp_path, "ppo", settings)
    assert result.returncode == 0, result.stderr
    assert_only_the_main_thread_is_left(tmp_path)
    first, second = held(tmp_path)
    assert_identical(first["model"], second["model"])
    assert "by 2 processes" in result.stdout
    greedy = float(re.search(r"greedy ([-\d.]+)", result.stdout.splitlines()[-1]).group(1))
    assert greedy >= 475, result.stdout.splitlines()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine(tmp_path):
    """Two torchrun launches, one per "node", meeting at a c10d rendezvous on localhost."""
    endpoint = f"localhost:{free_port()}"
    flags = cli({**TINY["ppo"], "run_dir": str(tmp_path / "runs")})
    logs = [tmp_path / f"node-{node}.log" for node in (0, 1)]
    launches = []
    for node, log in enumerate(logs):
        with open(log, "w") as out:
            launches.append(subprocess.Popen(
                torchrun("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id",
                         "test", os.path.join(ROOT, "ppo.py"), *flags),
                cwd=tmp_path, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
    # a node that fails leaves the other waiting minutes in torchrun's exit barrier: the test
    # ends as soon as one fails, with what both said
    deadline = time.monotonic() + 300
    while (any(launch.poll() is None for launch in launches)
           and not any(launch.returncode for launch in launches) and time.monotonic() < deadline):
        time.sleep(0.2)
    for launch in launches:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)  # torchrun and its process
            launch.wait()
    outputs = [log.read_text() for log in logs]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    [summary] = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))
    assert json.load(open(summary))["global_step"] == TINY["ppo"]["total_timesteps"]
    assert sum("by 2 processes" in out for out in outputs) == 1


@pytest.mark.parametrize("flags,line", [
    (["--num-envs", "3"], "ppo.py: error: --num-envs 3 must be a multiple of the 2 torchrun "
                          "processes, which step an equal share of the envs each"),
    (["--num-envs", "2", "--num-steps", "3", "--num-minibatches", "2"],
     "ppo.py: error: --num-minibatches 2 does not divide the batch of num_envs * num_steps = 6 "
     "/ 2 processes = 3"),
    (["--eval-checkpoint", "agent.pt"],
     "ppo.py: error: --eval-checkpoint runs in one process: use python, not torchrun"),
])
def test_bad_input_under_torchrun_is_one_line(tmp_path, flags, line):
    result = subprocess.run(torchrun("--nproc-per-node", "2", os.path.join(ROOT, "ppo.py"),
                                     *flags), cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    ours = [l for l in result.stderr.splitlines() if l.startswith("ppo.py")]
    assert ours == [line]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_process_that_dies_stops_the_others_and_the_first_saves(tmp_path):
    settings = {**TINY["ppo"], "total_timesteps": 400 * 4 * 32}
    result = run_two(tmp_path, "ppo", settings, {"DIE_AFTER": "3"}, timeout=300)
    assert result.returncode != 0
    [line] = [l for l in result.stderr.splitlines() if l.startswith("ppo.py")]
    [path] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    saved = f"checkpoint saved to {path} (step 384)"  # 3 iterations of 4 envs x 32 steps
    # the first process learns of it from its next exchange with the other, or from the SIGTERM
    # torchrun then sends, whichever comes first
    assert line in (f"ppo.py: process 0: stopped after step 384: another torchrun process "
                    f"stopped (torchrun's report says which and why); {saved}",
                    f"ppo.py: process 0: interrupted by SIGTERM after step 384; {saved}"), line
    assert torch.load(path, weights_only=True)["global_step"] == 384


def test_sigterm_to_torchrun_saves_the_first_processs_checkpoint_once(tmp_path):
    flags = cli({**TINY["ppo"], "total_timesteps": 100_000_000, "run_dir": str(tmp_path)})
    launch = subprocess.Popen(torchrun("--nproc-per-node", "2", os.path.join(ROOT, "ppo.py"),
                                       *flags),
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    for line in launch.stdout:  # the first progress line: an update has been completed
        if line.startswith("step"):
            break
    launch.send_signal(signal.SIGTERM)
    _, stderr = launch.communicate(timeout=120)
    ours = [l for l in stderr.splitlines() if l.startswith("ppo.py")]
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    assert len(ours) == 1 and ours[0].startswith("ppo.py: process 0: interrupted by SIGTERM")
    assert f"checkpoint saved to {path}" in ours[0]
    assert torch.load(path, weights_only=True)["global_step"] > 0
