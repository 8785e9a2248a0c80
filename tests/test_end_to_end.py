"""ppo.py run end to end on a tiny budget: artefacts, checkpoint evaluation, determinism, the KL
options, reward scaling, and Ctrl-C (for ppo_continuous.py too). Bad input: test_bad_input.py."""
import glob
import importlib
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import ppo
from conftest import ROOT

TINY = dict(total_timesteps=2 * 4 * 32, num_steps=32, eval_episodes=2)


def test_training_writes_events_checkpoint_and_the_checkpoint_evaluates(tmp_path):
    summary = ppo.train(ppo.Args(run_dir=str(tmp_path), **TINY))
    assert glob.glob(os.path.join(summary["run_dir"], "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(summary["run_dir"], "summary.json"))
    assert summary["global_step"] == 256
    result = ppo.main(ppo.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=3))
    assert result["env_id"] == "CartPole-v1"
    for mode in ("greedy", "sampled"):
        assert np.isfinite(result[f"eval_{mode}_mean"]) and result[f"eval_{mode}_mean"] >= 8  # CartPole lasts >= 8 steps


def test_tensorboard_has_the_documented_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    summary = ppo.train(ppo.Args(run_dir=str(tmp_path), kl_mode="penalty", **TINY))
    tags = set(EventAccumulator(summary["run_dir"]).Reload().Tags()["scalars"])
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/kl_beta"}
    assert expected <= tags


def state(path):
    return torch.load(path, weights_only=True)["model"]


def test_same_seed_same_result_different_seed_different(tmp_path):
    a = ppo.train(ppo.Args(run_dir=str(tmp_path / "a"), **TINY))
    b = ppo.train(ppo.Args(run_dir=str(tmp_path / "b"), **TINY))
    c = ppo.train(ppo.Args(run_dir=str(tmp_path / "c"), seed=2, **TINY))
    sa, sb, sc = state(a["checkpoint"]), state(b["checkpoint"]), state(c["checkpoint"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["episodes"] == b["episodes"] and a["eval_sampled_mean"] == b["eval_sampled_mean"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def collected(args):
    torch.manual_seed(0)
    envs = ppo.make_vector_env("CartPole-v1", args.num_envs)
    obs, _ = envs.reset(seed=0)
    agent = ppo.Agent(4, 2)
    rollout = ppo.Rollout.empty(args.num_steps, args.num_envs, (4,))
    ppo.collect_rollout(agent, envs, obs.astype(np.float32), rollout, np.zeros(args.num_envs),
                        np.zeros(args.num_envs, dtype=np.int64), None, torch.device("cpu"))
    envs.close()
    adv, ret = ppo.compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminations,
                               rollout.truncations, args.gamma, args.gae_lambda)
    return agent, rollout, adv, ret


@pytest.mark.parametrize("kl_mode", ["clip", "early-stop", "penalty"])
def test_kl_modes(kl_mode):
    args = ppo.Args(kl_mode=kl_mode, target_kl=1e-9, learning_rate=1e-2)
    agent, rollout, adv, ret = collected(args)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    stats = ppo.update(agent, optimizer, rollout, adv, ret, args, 1.0, torch.device("cpu"))
    assert all(np.isfinite(v) for v in stats.values())
    # early stop quits after the first minibatch that passes the (absurdly low) target
    assert stats["epochs"] == (1 if kl_mode == "early-stop" else args.update_epochs)


def test_norm_reward_scales_what_the_critic_learns_not_the_reported_returns(tmp_path):
    envs = ppo.make_vector_env("CartPole-v1", 2)
    obs, _ = envs.reset(seed=0)
    rollout = ppo.Rollout.empty(64, 2, (4,))
    _, finished = ppo.collect_rollout(ppo.Agent(4, 2), envs, obs.astype(np.float32), rollout, np.zeros(2),
                                      np.zeros(2, dtype=np.int64), ppo.RewardScaler(2, 0.99), torch.device("cpu"))
    envs.close()
    # CartPole pays 1 per step: a reported return is the raw sum, the episode's length
    assert finished and all(ret == length for ret, length in finished)
    # the first reward meets a std of 0 and is clipped to 10; once returns spread, 1 / std < 1
    assert np.all(rollout.rewards[0] == 10) and np.all(rollout.rewards[-1] < 1)
    summary = ppo.train(ppo.Args(run_dir=str(tmp_path), norm_reward=True, **TINY))
    assert all(ret == length for _, ret, length in summary["episodes"])


def test_async_envs_and_video(tmp_path):
    summary = ppo.train(ppo.Args(run_dir=str(tmp_path), async_envs=True, capture_video=True, **TINY))
    video = os.path.join(summary["run_dir"], "eval-greedy.mp4")
    assert os.path.getsize(video) > 1000


def run_cli(*argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "ppo.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cuda_flag_trains_anywhere(tmp_path):
    result = run_cli("--cuda", "--total-timesteps", "256", "--num-steps", "32", "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device is available; running on the CPU" in result.stderr
    assert glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))


def test_corrupt_checkpoint_is_one_clear_line_and_left_untouched(tmp_path):
    bad = tmp_path / "agent.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = run_cli("--eval-checkpoint", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo.py: error: --eval-checkpoint:") and "not a readable" in lines[0]
    assert bad.read_bytes() == b"not a checkpoint at all"


# a run long enough to be under way when the signal comes, for each MLP script (the pixel script's
# Ctrl-C test is in test_carracing.py: its checkpoint is checked without a costly evaluation)
CTRL_C_RUNS = {
    "ppo": ["--total-timesteps", "10000000"],
    "ppo_continuous": ["--env-id", "Pendulum-v1", "--num-steps", "256", "--num-minibatches", "4",
                       "--total-timesteps", "500000"],
}


@pytest.mark.parametrize("module", list(CTRL_C_RUNS))
@pytest.mark.parametrize("envs", ["--no-async-envs", "--async-envs"])
def test_ctrl_c_saves_a_checkpoint_that_evaluates(tmp_path, module, envs):
    # were the signal lost, the run would end by itself (and fail the test) rather than hang
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, f"{module}.py"), envs, *CTRL_C_RUNS[module]],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               # a shell's background job inherits SIGINT ignored: restore the default
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        process.stdout.readline()  # the first progress line: training is under way
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: env worker processes get it too
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    [checkpoint] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    script = importlib.import_module(module)
    result = script.main(script.Args(eval_checkpoint=checkpoint, eval_episodes=2))
    assert np.isfinite(result["eval_greedy_mean"])
