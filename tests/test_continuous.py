"""ppo_continuous.py beyond what every script shares (test_end_to_end.py, test_ppo_math.py): the
Gaussian policy against closed forms, the std schedule, the observation normaliser and its place
in the checkpoint, action clipping, every supported task, and learning Pendulum-v1."""
import math

import numpy as np
import pytest
import torch

import ppo_continuous as pc
from conftest import tiny

CPU = torch.device("cpu")


# --- the diagonal Gaussian policy ---------------------------------------------------------------

def test_gaussian_log_prob_and_entropy_against_closed_forms():
    rng = np.random.default_rng(0)
    mean, action = rng.normal(size=(6, 3)), rng.normal(scale=2.0, size=(6, 3))
    log_std = rng.normal(scale=0.5, size=3)
    sigma = np.exp(log_std)
    # independent dimensions: the density is the product of the 1-D normal densities
    density = np.prod(
        np.exp(-((action - mean) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi)), axis=-1
    )
    log_prob = pc.gaussian_log_prob(
        torch.tensor(action), torch.tensor(mean), torch.tensor(log_std).expand(6, 3)
    )
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
        np.testing.assert_allclose(
            agent.actor_logstd.detach().exp().numpy(), [init_std, init_std], rtol=1e-6
        )
        # the 0.01 output gain: whatever the std, the first actions are centred on 0
        assert agent.actor_mean(torch.randn(100, 3)).abs().max().item() < 0.1


def test_final_action_std_holds_the_std_under_the_cap_in_every_iteration(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged_std(run_dir):
        return [e.value for e in EventAccumulator(run_dir).Reload().Scalars("charts/action_std")]
    free = logged_std(pc.train(tiny(pc, run_dir=str(tmp_path / "free")))["run_dir"])
    capped = logged_std(
        pc.train(tiny(pc, run_dir=str(tmp_path / "cap"), final_action_std=0.25))["run_dir"]
    )
    # logged after each iteration's update, which may lift the std a little above the cap it
    # started from (40 Adam steps of at most lr = 3e-4 each in log std)
    caps = [pc.action_std_cap(i, 4, 1.0, 0.25) for i in range(1, 5)]
    assert all(std <= cap * math.exp(0.015) for std, cap in zip(capped, caps)), (capped, caps)
    assert capped[-1] < 0.26 and min(free) > 0.95


# --- normalisation --------------------------------------------------------------------------------

def test_observation_normalisation_is_standardised_and_clipped():
    # the running statistics themselves are checked against numpy in test_ppo_math.py
    rng = np.random.default_rng(1)
    agent = pc.Agent(3, 1)
    whole = rng.normal(loc=[0.0, 5.0, -100.0], scale=[1.0, 0.1, 30.0], size=(300, 3))
    agent.obs_rms.update(torch.from_numpy(whole))
    x = np.array([[0.0, 5.0, -100.0], [1e6, -1e6, 0.0]])
    # float32 observations in, as the networks take them
    expected = np.clip(
        (x.astype(np.float32) - whole.mean(0)) / np.sqrt(whole.var(0) + 1e-8), -10, 10
    )
    normed = agent.normalize(torch.from_numpy(x))
    assert normed.dtype == torch.float32
    np.testing.assert_allclose(normed.numpy(), expected, rtol=1e-6)
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


# --- action clipping ------------------------------------------------------------------------------

def test_action_clipping_reaches_the_env_but_not_the_stored_action_or_log_prob():
    T, N = 40, 2
    torch.manual_seed(0)
    envs = pc.EnvGroups(pc.Args(env_id="tests/NarrowAction-v0"), N)
    obs, _ = envs.reset(seed=0)
    agent = pc.Agent(3, 2)
    with torch.no_grad():
        agent.actor_logstd.fill_(math.log(2.0))  # most samples fall outside [-0.5, 0.5]
    rollout = pc.Rollout.empty(T, N, envs.single_observation_space, envs.single_action_space)
    pc.collect_rollout(agent, envs, obs, rollout, None, CPU)
    received = np.stack([np.stack(env.unwrapped.received) for env in envs.groups[0].envs], axis=1)
    envs.close()

    assert np.abs(rollout.actions).max() > 1.0
    np.testing.assert_array_equal(received, np.clip(rollout.actions, -0.5, 0.5))
    # the stored log-prob is the density of the sampled action, recomputed here in numpy
    with torch.no_grad():
        mean = agent.actor_mean(torch.from_numpy(rollout.obs)).numpy()
    sigma = 2.0
    expected = np.sum(
        -((rollout.actions - mean) ** 2) / (2 * sigma**2) - np.log(sigma * np.sqrt(2 * np.pi)),
        axis=-1,
    )
    np.testing.assert_allclose(rollout.logprobs, expected, rtol=1e-5, atol=1e-5)
    at_clipped = np.sum(
        -((received - mean) ** 2) / (2 * sigma**2) - np.log(sigma * np.sqrt(2 * np.pi)), axis=-1
    )
    assert np.abs(at_clipped - rollout.logprobs).max() > 0.1


# --- checkpoints and end to end -------------------------------------------------------------------

def state(path):
    return torch.load(path, weights_only=True)["model"]


def test_checkpoint_restores_the_normaliser_exactly_and_evaluates_identically(tmp_path):
    original = pc.Agent(3, 1)
    original.normalize(torch.randn(50, 3) * 4 + 2, update=True)
    pc.save_checkpoint(str(tmp_path / "agent.pt"), pc.make_checkpoint(original, tiny(pc), 50))
    loaded, _ = pc.load_checkpoint(str(tmp_path / "agent.pt"))
    assert {"obs_rms.mean", "obs_rms.var", "obs_rms.count"} <= set(loaded.state_dict())
    assert all(
        torch.equal(value, loaded.state_dict()[k]) for k, value in original.state_dict().items()
    )
    x = torch.randn(7, 3) * 10
    assert torch.equal(original.normalize(x), loaded.normalize(x))

    args = tiny(pc, run_dir=str(tmp_path))
    summary = pc.train(args)
    agent, _ = pc.load_checkpoint(summary["checkpoint"])
    saved = state(summary["checkpoint"])
    # every observation the policy acted on in training counted once, and nothing else
    assert agent.obs_rms.count.item() == summary["global_step"]

    # evaluation leaves the statistics frozen, so evaluating again gives the same scores
    again = pc.evaluate(agent, args, 2, True, 100_001, CPU)
    assert all(torch.equal(agent.state_dict()[k], saved[k]) for k in saved)
    np.testing.assert_array_equal(again, pc.evaluate(agent, args, 2, True, 100_001, CPU))
    # and the statistics matter: the same weights with a fresh normaliser act differently
    fresh = pc.Agent(3, 1)
    fresh.load_state_dict(
        {k: v for k, v in saved.items() if not k.startswith("obs_rms")}, strict=False
    )
    assert not np.array_equal(again, pc.evaluate(fresh, args, 2, True, 100_001, CPU))


def test_without_normalisation_the_checkpoint_holds_no_statistics(tmp_path):
    summary = pc.train(tiny(pc, run_dir=str(tmp_path), norm_obs=False, norm_reward=False))
    assert not any(k.startswith("obs_rms") for k in state(summary["checkpoint"]))
    result = pc.main(pc.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=2))
    assert result["eval_greedy_mean"] == summary["eval_greedy_mean"]


@pytest.mark.parametrize(
    "env_id",
    [
        "MountainCarContinuous-v0",
        "LunarLanderContinuous-v3",
        "BipedalWalker-v3",
        "BipedalWalkerHardcore-v3",
        "HalfCheetah-v5",  # MuJoCo, in requirements.txt: run, never skipped
    ],
)
def test_every_supported_task_trains_and_evaluates(tmp_path, env_id):
    summary = pc.train(
        pc.Args(
            env_id=env_id,
            run_dir=str(tmp_path),
            num_steps=64,
            num_minibatches=2,
            total_timesteps=128,
            eval_episodes=1,
        )
    )
    assert np.isfinite(summary["eval_greedy_mean"]) and np.isfinite(summary["eval_sampled_mean"])


# --- learning -------------------------------------------------------------------------------------

PENDULUM = dict(
    env_id="Pendulum-v1",
    num_envs=4,
    num_steps=256,
    num_minibatches=16,
    update_epochs=10,
    gamma=0.97,
    gae_lambda=0.9,
    learning_rate=1e-3,
    clip_vloss=False,
    activation="relu",
    total_timesteps=102_400,
)


def test_learns_pendulum(tmp_path):
    """Pendulum-v1, seed 1: from about -1200 (the untrained policy's first episodes) to a mean
    greedy evaluation return above -400 over 10 episodes within a budget of 102,400 steps
    (100 rollouts of 4 envs x 256 steps), on the CPU. The recipe is benchmark.sh's: rl-zoo's
    Pendulum one (lr 1e-3 annealed, 10 epochs of minibatches of 64, no entropy bonus) without
    its gSDE exploration, with shorter rollouts, gamma 0.97, lambda 0.9, no value clipping and
    ReLU units (how it was chosen: docs/benchmark/recipes.md)."""
    summary = pc.train(pc.Args(run_dir=str(tmp_path), seed=1, eval_episodes=10, **PENDULUM))
    first = [ret for _, ret, _ in summary["episodes"][:20]]
    assert np.mean(first) < -1000
    assert summary["eval_greedy_mean"] > -400, summary["eval_greedy_mean"]
