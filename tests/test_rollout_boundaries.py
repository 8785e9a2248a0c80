"""Episode boundaries under gymnasium 1.x vector envs, checked on a toy env whose observation
says which episode and which step it is: nothing may be learnt across a reset, and a time-limit
truncation must bootstrap from the value of the true final observation. For the MLP scripts (a
Discrete and a Box counter env); the pixel script's own cut-off is checked in test_carracing.py.
And every script's env stack keeps gymnasium's own checks quiet."""
import dataclasses
import importlib
import warnings

import numpy as np
import pytest
import torch

from conftest import tiny
from toy_envs import COUNTER_MAX_STEPS, counter_value


class StubAgent:
    """V(obs) = 100 * episode + step, so every value says which observation it came from."""

    def __init__(self, action_shape):
        self.action_shape = action_shape

    def normalize(self, obs, update=False):
        return obs

    def get_value(self, obs):
        return 100 * obs[:, 0] + obs[:, 1]

    def get_action_and_value(self, obs, action=None, greedy=False):
        n = obs.shape[0]
        action = torch.zeros(
            n, *self.action_shape, dtype=torch.long if not self.action_shape else torch.float32
        )
        return action, torch.zeros(n), torch.zeros(n), self.get_value(obs)


@pytest.mark.parametrize(
    "module,env_id,action_shape",
    [("ppo", "tests/Counter-v0", ()), ("ppo_continuous", "tests/BoxCounter-v0", (1,))],
)
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("overlap", [False, True])
def test_rollout_never_crosses_a_reset_and_bootstraps_truncations(
    module, env_id, action_shape, scaled, overlap
):
    script = importlib.import_module(module)
    T, N = 23, 4
    args = tiny(script, env_id=env_id, num_envs=N, overlap=overlap)
    envs = script.EnvGroups(args, N)
    obs, _ = envs.reset(seed=0)
    rollout = script.Rollout.empty(T, N, envs.single_observation_space, envs.single_action_space)
    scaler = script.RewardScaler(N, 0.9) if scaled else None
    last_obs, finished = script.collect_rollout(StubAgent(action_shape), envs, obs, rollout, scaler,
                                                torch.device("cpu"))
    envs.close()

    following = np.concatenate([rollout.obs[1:], last_obs[None]])
    ended = (rollout.terminations + rollout.truncations) > 0
    episode, step = rollout.obs[..., 0], rollout.obs[..., 1]
    cut = (rollout.truncations > 0) & (rollout.terminations == 0)
    assert cut.any() and rollout.terminations.any()
    # odd episodes terminate after 3 steps, even ones are truncated by the time limit
    assert np.all(episode[rollout.terminations > 0] % 2 == 1)
    assert np.all(step[rollout.terminations > 0] + 1 == 3)
    assert np.all(episode[cut] % 2 == 0) and np.all(step[cut] + 1 == COUNTER_MAX_STEPS)
    # V of the observation the time limit cut off, not of the reset that replaced it
    np.testing.assert_array_equal(
        rollout.next_values[cut], counter_value((episode[cut], COUNTER_MAX_STEPS))
    )
    # after an end comes the next episode's first observation; inside an episode, its next step
    np.testing.assert_array_equal(
        following[ended], np.stack([episode[ended] + 1, 0 * episode[ended]], -1)
    )
    np.testing.assert_array_equal(
        following[~ended], np.stack([episode[~ended], step[~ended] + 1], -1)
    )
    np.testing.assert_array_equal(rollout.next_values[~ended], counter_value(following[~ended].T))
    # returns and lengths are counted on the raw rewards (1 per step), whatever the critic learns
    assert sorted({length for _, length in finished}) == [3, COUNTER_MAX_STEPS]
    assert all(ret == length for ret, length in finished)
    assert len(finished) == int(ended.sum())
    assert np.allclose(rollout.rewards, 1.0) != scaled


def stub_rollout(script, env_id, action_shape, **overrides):
    T, N = 23, 4
    args = tiny(script, env_id=env_id, num_envs=N, **overrides)
    envs = script.EnvGroups(args, N)
    obs, _ = envs.reset(seed=0)
    rollout = script.Rollout.empty(T, N, envs.single_observation_space, envs.single_action_space)
    last_obs, finished = script.collect_rollout(StubAgent(action_shape), envs, obs, rollout, None,
                                                torch.device("cpu"))
    envs.close()
    return rollout, last_obs, finished


@pytest.mark.parametrize(
    "module,env_id,action_shape",
    [("ppo", "tests/Counter-v0", ()), ("ppo_continuous", "tests/BoxCounter-v0", (1,))],
)
@pytest.mark.parametrize("async_envs", [False, True])
def test_overlapped_halves_collect_what_one_vector_env_collects(
    module, env_id, action_shape, async_envs
):
    """--overlap steps the envs as two vector envs that take turns: with a policy that draws
    nothing at random, the rollout is the one a single vector env gives, column for column."""
    script = importlib.import_module(module)
    whole = stub_rollout(script, env_id, action_shape)
    halves = stub_rollout(script, env_id, action_shape, overlap=True, async_envs=async_envs)
    for field in dataclasses.fields(script.Rollout):
        np.testing.assert_array_equal(getattr(halves[0], field.name),
                                      getattr(whole[0], field.name), err_msg=field.name)
    np.testing.assert_array_equal(halves[1], whole[1])
    assert sorted(halves[2]) == sorted(whole[2])


@pytest.mark.parametrize("module,env_id,extra", [
    ("ppo", "CartPole-v1", {}), ("ppo_continuous", "Pendulum-v1", {}),
    ("ppo_atari_carracing", "CarRacing-v3", {}),
    ("ppo_atari_carracing", "CarRacing-v3", {"continuous": True}),
    ("ppo_atari_carracing", "ALE/Breakout-v5", {})])
def test_each_env_stack_passes_gymnasium_s_checks_without_a_warning(module, env_id, extra):
    """gym.make wraps every env in gymnasium's passive checker, which warns about a broken
    contract on the first reset and steps: for instance two calls that return one array, which a
    user keeping observations would see change under them. The wrappers the scripts add must not
    break one either: each stack as the script builds it, for training and for evaluation."""
    script = importlib.import_module(module)
    for training in (True, False):
        env = script.make_env(script.Args(env_id=env_id, **extra), training)()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            env.reset(seed=0)
            env.action_space.seed(0)
            for _ in range(5):
                env.step(env.action_space.sample())
        env.close()
