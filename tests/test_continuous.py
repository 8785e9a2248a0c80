"""ppo_continuous.py: the Gaussian policy, the observation normaliser and the reward scaler, action
clipping, episode boundaries, checkpoints, end-to-end runs and bad input, and learning
Pendulum-v1. The PPO math it shares with ppo.py is checked in test_ppo_math.py."""
import glob
import importlib.util
import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_continuous as pc
from conftest import ROOT
from test_rollout_boundaries import MAX_STEPS, CounterEnv, value

# 2 envs x 4 rollouts of 64 steps: each env ends one 200-step Pendulum episode
TINY = dict(env_id="Pendulum-v1", num_envs=2, num_steps=64, num_minibatches=4, total_timesteps=2 * 4 * 64,
            eval_episodes=2)
CPU = torch.device("cpu")


# --- the diagonal Gaussian policy ---------------------------------------------------------------

def test_gaussian_log_prob_and_entropy_against_closed_forms():
    rng = np.random.default_rng(0)
    mean, action = rng.normal(size=(6, 3)), rng.normal(scale=2.0, size=(6, 3))
    log_std = rng.normal(scale=0.5, size=3)
    sigma = np.exp(log_std)
    # independent dimensions: the density is the product of the 1-D normal densities
    density = np.prod(np.exp(-(action - mean) ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi)), axis=-1)
    log_prob = pc.gaussian_log_prob(torch.tensor(action), torch.tensor(mean), torch.tensor(log_std).expand(6, 3))
    np.testing.assert_allclose(log_prob.numpy(), np.log(density), rtol=1e-10)
    # the entropy of N(mu, Sigma) is log det(2 pi e Sigma) / 2
    expected = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * np.diag(sigma ** 2)))
    assert pc.gaussian_entropy(torch.tensor(log_std)).item() == pytest.approx(expected, rel=1e-10)


def test_agent_samples_from_its_gaussian_and_greedy_is_the_mean():
    torch.manual_seed(0)
    agent = pc.Agent(3, 2)
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([-1.0, 0.5]))
        obs = torch.randn(1, 3).repeat(100_000, 1)
        mean = agent.actor_mean(obs[:1])[0]
        actions, logprob, entropy, _ = agent.get_action_and_value(obs)
        greedy, _, _, _ = agent.get_action_and_value(obs[:3], greedy=True)
    np.testing.assert_allclose(actions.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(actions.std(0), np.exp([-1.0, 0.5]), rtol=0.02)
    np.testing.assert_allclose(greedy, mean.expand(3, 2), rtol=1e-6)
    # the entropy is the expected negative log-density, here estimated from the samples themselves
    assert (-logprob).mean().item() == pytest.approx(entropy[0].item(), abs=0.02)


def test_the_policy_starts_at_the_requested_std_with_the_mean_near_zero():
    torch.manual_seed(0)
    for init_std in (1.0, 0.5):
        agent = pc.Agent(3, 2, init_action_std=init_std)
        np.testing.assert_allclose(agent.actor_logstd.detach().exp().numpy(), [init_std, init_std], rtol=1e-6)
        # the 0.01 output gain: whatever the std, the first actions are centred on 0
        assert agent.actor_mean(torch.randn(100, 3)).abs().max().item() < 0.1


def test_the_std_cap_falls_on_a_line_from_the_initial_std_to_the_final_one():
    caps = [pc.action_std_cap(i, 5, 1.0, 0.2) for i in range(1, 6)]
    np.testing.assert_allclose(caps, [1.0, 0.8, 0.6, 0.4, 0.2])
    assert pc.action_std_cap(1, 1, 1.0, 0.2) == 1.0  # a one-iteration run is not divided by zero


def test_final_action_std_holds_the_std_under_the_cap_in_every_iteration(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged_std(run_dir):
        return [e.value for e in EventAccumulator(run_dir).Reload().Scalars("charts/action_std")]
    free = logged_std(pc.train(pc.Args(run_dir=str(tmp_path / "free"), **TINY))["run_dir"])
    capped = logged_std(pc.train(pc.Args(run_dir=str(tmp_path / "cap"), final_action_std=0.25, **TINY))["run_dir"])
    # logged after each iteration's update, which may lift the std a little above the cap it
    # started from (40 Adam steps of at most lr = 3e-4 each in log std)
    caps = [pc.action_std_cap(i, 4, 1.0, 0.25) for i in range(1, 5)]
    assert all(std <= cap * math.exp(0.015) for std, cap in zip(capped, caps)), (capped, caps)
    assert capped[-1] < 0.26 and min(free) > 0.95


# --- normalisation --------------------------------------------------------------------------------

def test_observation_normalisation_is_standardised_and_clipped():
    # the running statistics themselves are checked against numpy in test_ppo_math.py
    rng = np.random.default_rng(1)
    rms = pc.RunningMeanStd((3,))
    whole = rng.normal(loc=[0.0, 5.0, -100.0], scale=[1.0, 0.1, 30.0], size=(300, 3))
    rms.update(torch.from_numpy(whole))
    x = np.array([[0.0, 5.0, -100.0], [1e6, -1e6, 0.0]])
    expected = np.clip((x - whole.mean(0)) / np.sqrt(whole.var(0) + 1e-8), -10, 10)
    np.testing.assert_allclose(rms.normalize(torch.from_numpy(x)).numpy(), expected, rtol=1e-10)
    assert np.abs(expected[1]).max() == 10  # the clip is exercised


def test_agent_updates_its_normaliser_only_when_asked():
    agent = pc.Agent(2, 1)
    obs = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    agent.normalize(obs)
    assert agent.obs_rms.count.item() == 0
    normed = agent.normalize(obs, update=True)
    assert agent.obs_rms.count.item() == 2 and normed.dtype == torch.float32
    np.testing.assert_allclose(normed, [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-6)
    assert torch.equal(pc.Agent(2, 1, norm_obs=False).normalize(obs * 100), obs * 100)


# --- action clipping and episode boundaries -------------------------------------------------------

class NarrowActionEnv(gym.Env):
    """Bounds [-0.5, 0.5]; remembers every action it receives."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-0.5, 0.5, (2,), np.float32)

    def __init__(self):
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        self.received.append(np.array(action))
        return self.np_random.normal(size=3).astype(np.float32), -float(np.sum(action ** 2)), False, False, {}


gym.register("tests/NarrowAction-v0", entry_point=NarrowActionEnv, max_episode_steps=7)


def test_action_clipping_reaches_the_env_but_not_the_stored_action_or_log_prob():
    T, N = 40, 2
    torch.manual_seed(0)
    envs = pc.make_vector_env("tests/NarrowAction-v0", N)
    obs, _ = envs.reset(seed=0)
    agent = pc.Agent(3, 2)
    with torch.no_grad():
        agent.actor_logstd.fill_(math.log(2.0))  # most samples fall outside [-0.5, 0.5]
    rollout = pc.Rollout.empty(T, N, (3,), (2,))
    pc.collect_rollout(agent, envs, obs, rollout, np.zeros(N), np.zeros(N, dtype=np.int64), None, CPU)
    received = np.stack([np.stack(env.unwrapped.received) for env in envs.envs], axis=1)
    envs.close()

    assert np.abs(rollout.actions).max() > 1.0
    np.testing.assert_array_equal(received, np.clip(rollout.actions, -0.5, 0.5))
    # the stored log-prob is the density of the sampled action, recomputed here in numpy
    with torch.no_grad():
        mean = agent.actor_mean(torch.from_numpy(rollout.obs)).numpy()
    sigma = 2.0
    expected = np.sum(-(rollout.actions - mean) ** 2 / (2 * sigma ** 2) - np.log(sigma * np.sqrt(2 * np.pi)), axis=-1)
    np.testing.assert_allclose(rollout.logprobs, expected, rtol=1e-5, atol=1e-5)
    at_clipped = np.sum(-(received - mean) ** 2 / (2 * sigma ** 2) - np.log(sigma * np.sqrt(2 * np.pi)), axis=-1)
    assert np.abs(at_clipped - rollout.logprobs).max() > 0.1


class BoxCounterEnv(CounterEnv):
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


gym.register("tests/BoxCounter-v0", entry_point=BoxCounterEnv, max_episode_steps=MAX_STEPS)


class StubAgent:
    """V(obs) = 100 * episode + step, so every value says which observation it came from."""

    def normalize(self, obs, update=False):
        return obs

    def get_value(self, obs):
        return 100 * obs[:, 0] + obs[:, 1]

    def get_action_and_value(self, obs, action=None, greedy=False):
        n = obs.shape[0]
        return torch.zeros(n, 1), torch.zeros(n), torch.zeros(n), self.get_value(obs)


def test_rollout_never_crosses_a_reset_and_bootstraps_truncations():
    T, N = 23, 3
    envs = pc.make_vector_env("tests/BoxCounter-v0", N)
    obs, _ = envs.reset(seed=0)
    rollout = pc.Rollout.empty(T, N, (2,), (1,))
    last_obs, finished = pc.collect_rollout(StubAgent(), envs, obs, rollout, np.zeros(N),
                                            np.zeros(N, dtype=np.int64), pc.RewardScaler(N, 0.9), CPU)
    envs.close()
    following = np.concatenate([rollout.obs[1:], last_obs[None]])
    ended = (rollout.terminations + rollout.truncations) > 0
    episode, step = rollout.obs[..., 0], rollout.obs[..., 1]
    cut = (rollout.truncations > 0) & (rollout.terminations == 0)
    assert cut.any() and rollout.terminations.any()
    # V of the observation the time limit cut off, not of the reset that replaced it
    np.testing.assert_array_equal(rollout.next_values[cut], value((episode[cut], MAX_STEPS)))
    np.testing.assert_array_equal(following[ended], np.stack([episode[ended] + 1, 0 * episode[ended]], -1))
    np.testing.assert_array_equal(following[~ended], np.stack([episode[~ended], step[~ended] + 1], -1))
    np.testing.assert_array_equal(rollout.next_values[~ended], value(following[~ended].T))
    # returns and lengths are counted on the raw rewards (1 per step), not the scaled ones
    assert sorted({length for _, length in finished}) == [3, MAX_STEPS]
    assert all(ret == length for ret, length in finished)
    assert not np.allclose(rollout.rewards, 1.0)


# --- checkpoints and end to end ---------------------------------------------------------------------

def state(path):
    return torch.load(path, weights_only=True)["model"]


def test_checkpoint_restores_the_normaliser_exactly_and_evaluates_identically(tmp_path):
    original = pc.Agent(3, 1)
    original.normalize(torch.randn(50, 3) * 4 + 2, update=True)
    pc.save_checkpoint(str(tmp_path / "agent.pt"), original, pc.Args(**TINY), 3, 1, 50)
    loaded, _ = pc.load_checkpoint(str(tmp_path / "agent.pt"))
    assert {"obs_rms.mean", "obs_rms.var", "obs_rms.count"} <= set(loaded.state_dict())
    assert all(torch.equal(value, loaded.state_dict()[k]) for k, value in original.state_dict().items())
    x = torch.randn(7, 3) * 10
    assert torch.equal(original.normalize(x), loaded.normalize(x))

    summary = pc.train(pc.Args(run_dir=str(tmp_path), **TINY))
    agent, _ = pc.load_checkpoint(summary["checkpoint"])
    saved = state(summary["checkpoint"])
    # every observation the policy acted on in training counted once, and nothing else
    assert agent.obs_rms.count.item() == summary["global_step"]

    result = pc.main(pc.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=TINY["eval_episodes"]))
    assert (result["eval_greedy_mean"], result["eval_greedy_std"]) == (summary["eval_greedy_mean"], summary["eval_greedy_std"])
    # evaluation leaves the statistics frozen, so evaluating again gives the same scores
    again = pc.evaluate(agent, "Pendulum-v1", 2, True, 100_001, CPU)
    assert all(torch.equal(agent.state_dict()[k], saved[k]) for k in saved)
    np.testing.assert_array_equal(again, pc.evaluate(agent, "Pendulum-v1", 2, True, 100_001, CPU))
    # and the statistics matter: the same weights with a fresh normaliser act differently
    fresh = pc.Agent(3, 1)
    fresh.load_state_dict({k: v for k, v in saved.items() if not k.startswith("obs_rms")}, strict=False)
    assert not np.array_equal(again, pc.evaluate(fresh, "Pendulum-v1", 2, True, 100_001, CPU))


def test_training_writes_events_and_the_documented_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    summary = pc.train(pc.Args(run_dir=str(tmp_path), kl_mode="penalty", **TINY))
    assert os.path.isfile(os.path.join(summary["run_dir"], "summary.json"))
    assert summary["global_step"] == 512 and [length for _, _, length in summary["episodes"]] == [200, 200]
    tags = set(EventAccumulator(summary["run_dir"]).Reload().Tags()["scalars"])
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                "charts/action_std", "losses/policy_loss",
                "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/old_approx_kl",
                "losses/clipfrac", "losses/explained_variance", "losses/kl_beta", "eval/greedy_return"}
    assert expected <= tags


def test_same_seed_same_result_different_seed_different(tmp_path):
    a = pc.train(pc.Args(run_dir=str(tmp_path / "a"), **TINY))
    b = pc.train(pc.Args(run_dir=str(tmp_path / "b"), **TINY))
    c = pc.train(pc.Args(run_dir=str(tmp_path / "c"), seed=2, **TINY))
    sa, sb, sc = state(a["checkpoint"]), state(b["checkpoint"]), state(c["checkpoint"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the normaliser's statistics included
    assert a["episodes"] == b["episodes"] and a["eval_sampled_mean"] == b["eval_sampled_mean"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("kl_mode", ["clip", "early-stop", "penalty"])
def test_kl_modes(kl_mode):
    args = pc.Args(kl_mode=kl_mode, target_kl=1e-9, learning_rate=1e-2, **TINY)
    torch.manual_seed(0)
    envs = pc.make_vector_env(args.env_id, args.num_envs)
    obs, _ = envs.reset(seed=0)
    agent = pc.Agent(3, 1)
    rollout = pc.Rollout.empty(args.num_steps, args.num_envs, (3,), (1,))
    pc.collect_rollout(agent, envs, obs, rollout, np.zeros(2), np.zeros(2, dtype=np.int64), pc.RewardScaler(2, 0.99), CPU)
    envs.close()
    adv, ret = pc.compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminations,
                              rollout.truncations, args.gamma, args.gae_lambda)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    stats = pc.update(agent, optimizer, rollout, adv, ret, args, 1.0, CPU)
    assert all(np.isfinite(v) for v in stats.values())
    assert stats["epochs"] == (1 if kl_mode == "early-stop" else args.update_epochs)


MUJOCO = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason='needs pip install "gymnasium[mujoco]"')


@pytest.mark.parametrize("env_id", ["MountainCarContinuous-v0", "LunarLanderContinuous-v3", "BipedalWalker-v3",
                                    "BipedalWalkerHardcore-v3", pytest.param("HalfCheetah-v5", marks=MUJOCO)])
def test_every_supported_task_trains_and_evaluates(tmp_path, env_id):
    summary = pc.train(pc.Args(env_id=env_id, run_dir=str(tmp_path), num_steps=64, num_minibatches=2,
                               total_timesteps=128, eval_episodes=1))
    assert np.isfinite(summary["eval_greedy_mean"]) and np.isfinite(summary["eval_sampled_mean"])


def test_switches_off_async_envs_and_video(tmp_path):
    summary = pc.train(pc.Args(run_dir=str(tmp_path), norm_obs=False, norm_reward=False, async_envs=True,
                               capture_video=True, **TINY))
    assert not any(k.startswith("obs_rms") for k in state(summary["checkpoint"]))
    assert os.path.getsize(os.path.join(summary["run_dir"], "eval-greedy.mp4")) > 1000
    result = pc.main(pc.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=2))
    assert result["eval_greedy_mean"] == summary["eval_greedy_mean"]


# --- the command line --------------------------------------------------------------------------------

def run_cli(*argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "ppo_continuous.py"), *argv], cwd=cwd,
                          capture_output=True, text=True)


def test_default_task_trains_from_the_command_line_and_cuda_falls_back(tmp_path):
    result = run_cli("--cuda", "--total-timesteps", "2048", "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device is available; running on the CPU" in result.stderr
    assert "LunarLanderContinuous-v3: 2,048 steps" in result.stdout
    [checkpoint] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    evaluated = run_cli("--eval-checkpoint", checkpoint, "--eval-episodes", "1", cwd=tmp_path)
    assert evaluated.returncode == 0 and "LunarLanderContinuous-v3  greedy:" in evaluated.stdout


def test_a_checkpoint_of_another_script_is_one_clear_line(tmp_path):
    import ppo
    foreign = tmp_path / "agent.pt"
    ppo.save_checkpoint(str(foreign), ppo.Agent(4, 2), ppo.Args(), 4, 2, 0)
    result = run_cli("--eval-checkpoint", str(foreign), cwd=tmp_path)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ppo_continuous.py: error: --eval-checkpoint:") and "not a readable ppo_continuous.py checkpoint" in line


# --- learning ----------------------------------------------------------------------------------------

PENDULUM = dict(env_id="Pendulum-v1", num_envs=4, num_steps=256, num_minibatches=16, update_epochs=10,
                gamma=0.97, gae_lambda=0.95, learning_rate=1e-3, clip_vloss=False, total_timesteps=102_400)


def test_learns_pendulum(tmp_path):
    """Pendulum-v1, seed 1: from about -1200 (the untrained policy's first episodes) to a mean
    greedy evaluation return above -400 over 10 episodes within a budget of 102,400 steps
    (100 rollouts of 4 envs x 256 steps), on the CPU. The recipe is benchmark.sh's: rl-zoo's
    Pendulum one (lr 1e-3 annealed, 10 epochs of minibatches of 64, no entropy bonus) without
    its gSDE exploration, with shorter rollouts, gamma 0.97 and no value clipping (how it was
    chosen: benchmark.sh and docs/notes/ppo_continuous.md)."""
    summary = pc.train(pc.Args(run_dir=str(tmp_path), seed=1, eval_episodes=10, **PENDULUM))
    first = [ret for _, ret, _ in summary["episodes"][:20]]
    assert np.mean(first) < -1000
    assert summary["eval_greedy_mean"] > -400, summary["eval_greedy_mean"]
