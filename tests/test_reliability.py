"""Nothing is lost (issue 13), for every script: --resume continues a run where it stopped; every
way a run stops saves its last good checkpoint, once and atomically; the first non-finite number
stops the run; bad input is one line before anything is written; run folders are a run's own;
health warnings raise no false alarm. Signals go through the command line; the rest runs in
process (the shared code is the same in the three scripts: test_shape.py)."""
import dataclasses
import glob
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import gymnasium as gym

import toy_envs
from conftest import ROOT, agent_for, tiny

CPU = torch.device("cpu")


def stop_line(script, args) -> str:
    """The one line main() ends the process with."""
    with pytest.raises(SystemExit) as stop:
        script.main(args)
    return str(stop.value.code)


# --- bad input ------------------------------------------------------------------------------------

COMMON_BAD = [
    (dict(seed=-1), "--seed must be in [0, 2**32), got -1"),
    (dict(seed=2 ** 32), "--seed must be in [0, 2**32), got 4294967296"),
    (dict(exp_name="../../x"), "--exp-name must be a name without '/'"),
    (dict(vf_coef=math.inf), "--vf-coef must be a finite number >= 0, got inf"),
    (dict(ent_coef=math.inf), "--ent-coef must be a finite number >= 0, got inf"),
    (dict(kl_beta=1e308), "--kl-beta must be in (0, 1e4], got 1e+308"),
    (dict(learning_rate=1e6), "--learning-rate must be in (0, 1], got 1000000.0"),
    (dict(save_every=-1.0), "--save-every must be a number of minutes >= 0"),
    (dict(num_envs=1, num_steps=4, num_minibatches=4),
     "--num-minibatches 4 leaves minibatches of one sample"),
    (dict(run_dir="a-file"), "--run-dir 'a-file': "),
    (dict(resume="missing.pt"), "--resume: no such file 'missing.pt'"),
    (dict(eval_checkpoint="."), "--eval-checkpoint: '.' is a folder; give the agent.pt inside it"),
    (dict(env_id="tests/NeedsAPackage-v0"), "--env-id: cannot create tests/NeedsAPackage-v0: "
     "ModuleNotFoundError: No module named 'not_installed_here'"),
]
SCRIPT_BAD = [
    ("ppo", dict(hidden_size=10 ** 6), "--hidden-size must be in [1, 8192]"),
    ("ppo_continuous", dict(init_action_std=1e-50), "--init-action-std must be in [1e-6, 1e6]"),
    ("ppo_atari_carracing", dict(frame_size=5000), "--frame-size must be at least 36"),
]


@pytest.mark.parametrize("overrides,message", COMMON_BAD, ids=[m[:30] for _, m in COMMON_BAD])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, monkeypatch, script, overrides,
                                                          message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    args = tiny(script, **{"run_dir": str(tmp_path / "runs"), **overrides})
    line = stop_line(script, args)
    assert line.startswith(f"{script.__name__}.py: error: {message}"), line
    assert "\n" not in line and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module,overrides,message", SCRIPT_BAD)
def test_allocation_sized_flags_are_bounded(tmp_path, module, overrides, message):
    import importlib
    script = importlib.import_module(module)
    line = stop_line(script, tiny(script, run_dir=str(tmp_path / "runs"), **overrides))
    assert line.startswith(f"{module}.py: error: {message}"), line


def test_a_rollout_larger_than_memory_is_one_line(tmp_path, script, monkeypatch):
    monkeypatch.setattr(os, "sysconf", lambda name: 1)  # a machine with one byte of memory
    line = stop_line(script, tiny(script, run_dir=str(tmp_path / "runs")))
    assert "the rollout needs" in line and "more than this machine's" in line, line
    assert not (tmp_path / "runs").exists()


def trained(script, tmp_path, **overrides):
    return script.train(tiny(script, run_dir=str(tmp_path), **overrides))


def test_checkpoints_that_cannot_act_are_refused_in_one_line(tmp_path, script):
    summary = trained(script, tmp_path)
    checkpoint = torch.load(summary["checkpoint"], weights_only=True)

    nan_weights = dict(checkpoint, model={k: v.clone() for k, v in checkpoint["model"].items()})
    first = next(k for k, v in nan_weights["model"].items() if v.is_floating_point())
    nan_weights["model"][first].view(-1)[0] = math.nan
    torch.save(nan_weights, tmp_path / "nan.pt")
    line = stop_line(script, script.Args(eval_checkpoint=str(tmp_path / "nan.pt")))
    assert f"has non-finite weights ({first})" in line, line

    gone = dict(checkpoint, args={**checkpoint["args"], "env_id": "tests/NoLongerRegistered-v0"})
    torch.save(gone, tmp_path / "gone.pt")
    line = stop_line(script, script.Args(eval_checkpoint=str(tmp_path / "gone.pt")))
    assert "the checkpoint's env cannot be made here" in line and "\n" not in line, line

    misfit = dict(checkpoint, agent={**checkpoint["agent"]})
    key = next(
        k for k, v in misfit["agent"].items() if isinstance(v, int) and not isinstance(v, bool)
    )
    misfit["agent"][key] += 1  # metadata that does not fit the weights
    torch.save(misfit, tmp_path / "misfit.pt")
    line = stop_line(script, script.Args(eval_checkpoint=str(tmp_path / "misfit.pt")))
    assert "is not a readable" in line and "\n" not in line, line

    line = stop_line(
        script, script.Args(eval_checkpoint=summary["checkpoint"], env_id="MountainCar-v0")
    )
    assert "--env-id MountainCar-v0 differs from the checkpoint's env" in line, line


class Payload:
    """An object a weights-only load must refuse to build."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_a_checkpoint_that_could_run_code_is_refused_without_unsafe_advice(tmp_path, script, capfd):
    with open(tmp_path / "agent.pt", "wb") as f:
        pickle.dump({"model": Payload()}, f)
    line = stop_line(script, script.Args(eval_checkpoint=str(tmp_path / "agent.pt")))
    assert "holds more than weights and plain data" in line and "weights_only" not in line, line
    assert "this ran" not in capfd.readouterr().out


# --- run folders ----------------------------------------------------------------------------------

def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, script, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    args = tiny(script, run_dir=str(tmp_path))
    first, second = script.new_run_folder(args), script.new_run_folder(args)
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    assert os.path.dirname(first) == os.path.dirname(second) == str(tmp_path)


# --- checkpoints are written whole or not at all --------------------------------------------------

def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, script, monkeypatch):
    summary = trained(script, tmp_path)
    path = summary["checkpoint"]
    before = open(path, "rb").read()

    def disk_full(obj, f):
        with open(f, "wb") as partial:
            partial.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        script.save_checkpoint(path, {"anything": 1})
    assert open(path, "rb").read() == before
    assert glob.glob(os.path.join(os.path.dirname(path), "*.tmp")) == []


# --- every way a run stops saves its last good checkpoint -----------------------------------------

def test_an_error_in_an_env_saves_the_last_good_checkpoint_and_says_what_happened(tmp_path, script):
    args = tiny(script, env_id=f"tests/Faulty-raise-{script.__name__}-v0", run_dir=str(tmp_path))
    with pytest.raises(script.RunStopped) as stop:
        script.train(args)
    message = str(stop.value)
    assert "RuntimeError: the simulator crashed" in message and "checkpoint saved to" in message
    assert stop.value.status == 1
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == args.batch_size  # the one update completed
    assert checkpoint["training"]["iteration"] == 1


def test_the_real_error_of_an_async_env_worker_is_reported_in_one_line(tmp_path):
    import warnings
    import ppo
    args = tiny(ppo, env_id="tests/Faulty-raise-ppo-v0", run_dir=str(tmp_path), async_envs=True)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ppo.RunStopped) as stop:
        warnings.simplefilter("always")
        ppo.train(args)
    assert "RuntimeError: the simulator crashed" in str(stop.value), str(stop.value)
    # gymnasium's own report of it (the worker's traceback, as warnings) is not printed as well
    assert not [w for w in caught if "Worker" in str(w.message)], [str(w.message) for w in caught]


NON_FINITE = [("ppo", "nan-reward", "the env returned a non-finite reward at step"),
              ("ppo", "nan-obs", "the env returned a non-finite observation at step"),
              ("ppo", "huge-reward", "the loss or its gradient became non-finite in the update"),
              ("ppo_continuous", "nan-reward", "the env returned a non-finite reward at step"),
              ("ppo_continuous", "nan-obs", "the env returned a non-finite observation at step"),
              ("ppo_atari_carracing", "nan-reward", "the env returned a non-finite reward at step"),
              ("ppo_atari_carracing", "huge-reward", "became non-finite in the update")]


@pytest.mark.parametrize(
    "module,fault,message", NON_FINITE, ids=[f"{m}-{f}" for m, f, _ in NON_FINITE]
)
def test_the_first_non_finite_number_stops_the_run_with_finite_weights_saved(tmp_path, module,
                                                                              fault, message):
    import importlib
    script = importlib.import_module(module)
    args = tiny(script, env_id=f"tests/Faulty-{fault}-{module}-v0", run_dir=str(tmp_path))
    with pytest.raises(script.RunStopped) as stop:
        script.train(args)
    assert message in str(stop.value) and "checkpoint saved to" in str(stop.value), str(stop.value)
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    checkpoint = torch.load(path, weights_only=True)
    assert all(
        torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point()
    )
    assert checkpoint["global_step"] == args.batch_size
    if "at step" in message:  # the env's step counter says when: the 40th, 80th or 20th of each env
        at = {"ppo": 40, "ppo_continuous": 80, "ppo_atari_carracing": 20}[module]
        # a NaN observation that ends an episode waits in info["final_obs"] (used only to bootstrap
        # a truncation, where the update's check stops it); the next step's shows it
        steps = [at] if fault == "nan-reward" else [at, at + 1]
        assert any(f"at step {n * args.num_envs:,};" in str(stop.value) for n in steps), str(
            stop.value
        )


BASE_ENV = {"ppo": "tests/Counter-v0", "ppo_continuous": "tests/BoxCounter-v0",
            "ppo_atari_carracing": "tests/FrameCounter-v0"}


def test_evaluation_ends_when_a_return_is_not_finite(script):
    """Each episode's second step pays NaN: every episode still ends, its return reported NaN."""
    env_id = f"tests/NaNAtOnce-{script.__name__}-v0"
    gym.register(env_id, entry_point=toy_envs.Faulty,
                 max_episode_steps=None if script.__name__ == "ppo_atari_carracing" else 5,
                 kwargs=dict(env_id=BASE_ENV[script.__name__], fault="nan-reward", at=2))
    args = tiny(script, env_id=env_id)
    envs = script.make_vector_env(args, 1)
    agent = agent_for(script, envs)
    envs.close()
    returns = script.evaluate(agent, args, 3, True, 0, CPU)
    assert returns.shape == (3,) and np.isnan(returns).all()


def run_until_training(argv, cwd):
    process = subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not process.stdout.readline().startswith("step"):  # an update is complete
        pass
    return process


def finish(process):
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return stderr


LONG_RUN = {"ppo": ["--total-timesteps", "10000000"],
            "ppo_continuous": ["--env-id", "Pendulum-v1", "--num-steps", "256",
                               "--num-minibatches", "4", "--total-timesteps", "5000000"],
            "ppo_atari_carracing": ["--num-envs", "2", "--num-steps", "8", "--num-minibatches", "2",
                                    "--total-timesteps", "10000000", "--torch-threads", "1"]}


# SIGTERM for every script; SIGHUP and a double Ctrl-C once: RunLog is the same code in all three
SIGNAL_CASES = [
    ("ppo", "SIGTERM"),
    ("ppo_continuous", "SIGTERM"),
    ("ppo_atari_carracing", "SIGTERM"),
    ("ppo", "SIGHUP"),
    ("ppo", "Ctrl-C twice"),
]


@pytest.mark.parametrize("module,how", SIGNAL_CASES, ids=[f"{m}-{h}" for m, h in SIGNAL_CASES])
def test_signals_save_once_and_exit_with_the_signal_s_status(tmp_path, module, how):
    import importlib
    script = importlib.import_module(module)
    process = run_until_training(
        [os.path.join(ROOT, f"{script.__name__}.py"), *LONG_RUN[script.__name__]], tmp_path
    )
    if how == "Ctrl-C twice":  # as a terminal sends it, to the whole process group, twice
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.005)
        os.killpg(process.pid, signal.SIGINT)
        status = 130
    else:  # as a scheduler or a closed ssh session sends it, to the trainer
        process.send_signal(getattr(signal, how))
        status = 128 + getattr(signal, how)
    stderr = finish(process)
    assert process.returncode == status, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith(f"{script.__name__}.py:")]
    name = "SIGINT" if how == "Ctrl-C twice" else how
    assert f"interrupted by {name}" in line and "checkpoint saved to" in line, stderr
    assert "Traceback" not in stderr
    [path] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    assert glob.glob(str(tmp_path / "runs" / "*" / "*.tmp")) == []
    agent, _ = script.load_checkpoint(path)  # whole, and finite
    assert torch.load(path, weights_only=True)["global_step"] > 0


# --- resume --------------------------------------------------------------------------------------

def test_a_checkpoint_restores_every_piece_of_the_run_exactly(tmp_path, script):
    """RunLog.keep and save write the run's state; restore puts it into fresh objects: weights,
    optimiser, reward-scaler statistics, KL coefficient, iteration, and the random-number
    generators, whose next draws must be the same as those of the run that was saved."""
    args = tiny(script, run_dir=str(tmp_path), norm_reward=True, kl_mode="penalty")
    envs = script.make_vector_env(args, args.num_envs)
    agent = agent_for(script, envs)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    for _ in range(3):  # give Adam a state and the weights some history
        optimizer.zero_grad()
        sum(p.square().sum() for p in agent.parameters()).backward()
        optimizer.step()
    scaler = script.RewardScaler(args.num_envs, args.gamma)
    scaler(np.arange(args.num_envs, dtype=float), np.zeros(args.num_envs, bool))
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    log = script.RunLog(args, agent, optimizer, scaler, envs, 0.0)
    log.global_step = 3 * args.batch_size
    log.keep(3, 0.125)
    log.save()
    log.writer.close()
    envs.close()
    draws = (torch.rand(3), np.random.rand(3), random.random())

    checkpoint = script.read_checkpoint(log.checkpoint_path, "--resume")
    fresh_envs = script.make_vector_env(args, args.num_envs)
    fresh = agent_for(script, fresh_envs)
    fresh_envs.close()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_scaler = script.RewardScaler(args.num_envs, args.gamma)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    assert script.restore(checkpoint, fresh, fresh_optimizer, fresh_scaler) == (4, 0.125)
    for key, value in agent.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    saved, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, restored["state"][index][key]), (index, key)
    for key, value in scaler.rms.state_dict().items():
        assert torch.equal(value, fresh_scaler.rms.state_dict()[key]), key
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2]


def interrupt_after(script, monkeypatch, stop_at):
    """Ctrl-C arrives just after the update of iteration `stop_at`."""
    original = script.RunLog.iteration

    def iteration(self, iteration, *rest):
        original(self, iteration, *rest)
        if iteration == stop_at:
            raise KeyboardInterrupt
    monkeypatch.setattr(script.RunLog, "iteration", iteration)


def test_an_interrupted_run_resumes_to_its_end_on_its_schedule(tmp_path, script, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    args = tiny(script, run_dir=str(tmp_path), total_timesteps=4 * tiny(script).batch_size,
                anneal_ent=True, ent_coef=0.01)
    interrupt_after(script, monkeypatch, 2)
    with pytest.raises(script.RunStopped) as stop:
        script.train(args)
    assert stop.value.status == 130
    monkeypatch.undo()
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    before = torch.load(path, weights_only=True)["training"]["episodes"]
    summary = script.train(script.Args(resume=path))
    assert (
        summary["run_dir"] == os.path.dirname(path)
        and summary["global_step"] == args.total_timesteps
    )
    # the learning rate and the entropy weight went on down the lines they would have followed
    # without the interruption
    events = EventAccumulator(summary["run_dir"]).Reload()
    for tag, start in (("charts/learning_rate", args.learning_rate),
                       ("charts/ent_coef", args.ent_coef)):
        by_step = {event.step: event.value for event in events.Scalars(tag)}
        for i in range(1, 5):
            expected = start * (1 - (i - 1) / 4)
            assert by_step[i * args.batch_size] == pytest.approx(expected, rel=1e-6), (tag, i)
    # the episodes before the stop are kept, those after follow them
    assert [tuple(e) for e in before] == summary["episodes"][:len(before)]
    assert all(step > 2 * args.batch_size for step, _, _ in summary["episodes"][len(before):])


def test_a_stop_while_the_episodes_are_gathered_keeps_the_update_just_made(tmp_path, script,
                                                                           monkeypatch):
    """Under torchrun, gathering a rollout's episodes waits on the other processes, so that is
    where a lost process or torchrun's SIGTERM finds the first one: the update made just before
    is kept, with the episodes gathered before it."""
    args = tiny(script, run_dir=str(tmp_path), total_timesteps=50 * tiny(script).batch_size)
    gathered = []  # each iteration's episodes, until one has some

    def gather(items):
        if any(gathered):
            raise KeyboardInterrupt("SIGTERM")
        gathered.append(list(items))
        return items
    monkeypatch.setattr(script, "gather_over_processes", gather)
    with pytest.raises(script.RunStopped) as stop:
        script.train(args)
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    iteration = len(gathered) + 1
    step = iteration * args.batch_size
    assert str(stop.value) == (f"interrupted by SIGTERM after step {step:,}; checkpoint saved to "
                               f"{path} (step {step:,})")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == step and checkpoint["training"]["iteration"] == iteration
    assert [tuple(episode) for episode in checkpoint["training"]["episodes"]] == [
        ((i + 1) * args.batch_size, ret, length)
        for i, episodes in enumerate(gathered) for ret, length in episodes]


def test_cartpole_interrupted_halfway_and_resumed_still_learns(tmp_path, monkeypatch):
    """test_learning.py's budget (200,000 steps), with Ctrl-C after 100,352 steps: the resumed
    half (new episodes, everything else restored) still ends at 475 or more."""
    import ppo
    args = ppo.Args(seed=1, total_timesteps=200_000, run_dir=str(tmp_path), eval_episodes=20)
    interrupt_after(ppo, monkeypatch, args.num_iterations // 2)
    with pytest.raises(ppo.RunStopped):
        ppo.train(args)
    monkeypatch.undo()
    [path] = glob.glob(str(tmp_path / "*" / "agent.pt"))
    summary = ppo.train(ppo.Args(resume=path))
    assert summary["global_step"] == args.num_iterations * args.batch_size
    assert summary["eval_greedy_mean"] >= 475, summary["eval_greedy_mean"]


# --- health warnings ------------------------------------------------------------------------------

def test_explained_variance_says_nothing_of_returns_that_do_not_vary(script):
    returns = np.full(512, 99.3) + np.random.default_rng(0).normal(0, 1e-5, 512)
    values = returns + np.random.default_rng(1).normal(0, 1e-5, 512)
    assert math.isnan(script.explained_variance(values, returns))  # was about -1: a false alarm
    varied = np.linspace(0, 100, 512)
    assert script.explained_variance(varied + 1, varied) == pytest.approx(1.0)


def test_a_full_disk_while_saving_on_stop_is_part_of_the_one_line(tmp_path, script, monkeypatch):
    args = tiny(script, env_id=f"tests/Faulty-raise-{script.__name__}-v0", run_dir=str(tmp_path))

    def disk_full(obj, f):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(script.RunStopped) as stop:
        script.train(args)
    message = str(stop.value)
    assert "RuntimeError: the simulator crashed" in message and "No space left" in message, message
    assert "\n" not in message


def test_periodic_checkpoints_are_the_last_completed_update(tmp_path, script, monkeypatch):
    """--save-every 1e-9 (minutes): every update is saved as soon as it completes."""
    seen = []
    original = script.RunLog.iteration

    def iteration(self, number, *rest):
        original(self, number, *rest)
        seen.append(torch.load(self.checkpoint_path, weights_only=True)["global_step"])
    monkeypatch.setattr(script.RunLog, "iteration", iteration)
    args = tiny(script, run_dir=str(tmp_path), save_every=1e-9)
    script.train(args)
    assert seen == [i * args.batch_size for i in range(1, args.num_iterations + 1)]


def test_a_budget_that_is_not_whole_batches_is_said_in_the_first_line(tmp_path, script, capsys):
    args = tiny(script, run_dir=str(tmp_path))
    summary = script.train(dataclasses.replace(args, total_timesteps=args.total_timesteps + 5))
    first = capsys.readouterr().out.splitlines()[0]
    assert f"{args.total_timesteps:,} steps" in first and "not a whole number of batches" in first
    assert summary["global_step"] == args.total_timesteps
