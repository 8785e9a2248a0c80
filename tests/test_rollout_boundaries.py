"""Episode boundaries under gymnasium 1.x vector envs, checked on a toy env whose observation
says which episode and which step it is: nothing may be learnt across a reset, and a time-limit
truncation must bootstrap from the value of the true final observation."""
import gymnasium as gym
import numpy as np
import torch

import ppo

MAX_STEPS = 5  # TimeLimit truncates even episodes here; odd episodes terminate after 3 steps


class CounterEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([self.episode, self.t], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t == 3
        return np.array([self.episode, self.t], np.float32), 1.0, terminated, False, {}


gym.register("tests/Counter-v0", entry_point=CounterEnv, max_episode_steps=MAX_STEPS)


class StubAgent:
    """V(obs) = 100 * episode + step, so every value says which observation it came from."""

    def get_value(self, obs):
        return 100 * obs[:, 0] + obs[:, 1]

    def get_action_and_value(self, obs, action=None, greedy=False):
        n = obs.shape[0]
        return torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n), self.get_value(obs)


def value(obs):
    return 100 * obs[0] + obs[1]


def test_rollout_never_crosses_a_reset_and_bootstraps_truncations():
    T, N = 23, 3
    envs = ppo.make_vector_env("tests/Counter-v0", N)
    obs, _ = envs.reset(seed=0)
    rollout = ppo.Rollout.empty(T, N, (2,))
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    obs = obs.astype(np.float32)
    last_obs, finished = ppo.collect_rollout(StubAgent(), envs, obs, rollout, ep_return, ep_length, None, torch.device("cpu"))
    envs.close()

    seen_truncation = seen_termination = 0
    for n in range(N):
        for t in range(T):
            episode, step = rollout.obs[t, n]
            following = rollout.obs[t + 1, n] if t + 1 < T else last_obs[n]
            if rollout.terminations[t, n]:
                seen_termination += 1
                assert episode % 2 == 1 and step + 1 == 3
                assert rollout.truncations[t, n] == 0
            elif rollout.truncations[t, n]:
                seen_truncation += 1
                assert episode % 2 == 0 and step + 1 == MAX_STEPS
                # V of the observation the time limit cut off, not of the reset that replaced it
                assert rollout.next_values[t, n] == value((episode, MAX_STEPS))
            else:
                # inside an episode: the next stored observation is the next step of the same one
                np.testing.assert_array_equal(following, [episode, step + 1])
                assert rollout.next_values[t, n] == value(following)
            if rollout.terminations[t, n] or rollout.truncations[t, n]:
                np.testing.assert_array_equal(following, [episode + 1, 0])
    assert seen_truncation > 0 and seen_termination > 0
    assert sorted({length for _, length in finished}) == [3, MAX_STEPS]
    assert all(ret == length for ret, length in finished)
    assert len(finished) == int(rollout.terminations.sum() + rollout.truncations.sum())
