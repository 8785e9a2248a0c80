"""Small envs for the suite, registered under tests/ ids. Their observations and rewards say
exactly what happened, so a test can check a rollout or an evaluation against what it must be."""
import gymnasium as gym
import numpy as np

import ppo_atari_carracing

COUNTER_MAX_STEPS = (
    5  # TimeLimit truncates even episodes here; odd episodes terminate after 3 steps
)
FRAME = 36  # the Nature CNN's smallest frame: the image envs stay cheap


class CounterEnv(gym.Env):
    """Observation (episode, step); reward 1 a step. Even episodes run into the time limit
    (truncated), odd ones terminate after 3 steps."""
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


class BoxCounterEnv(CounterEnv):
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


def counter_value(obs):
    """The value the stub agents give an observation: 100 * episode + step, so every value says
    which observation it came from."""
    return 100 * obs[0] + obs[1]


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
        obs = self.np_random.normal(size=3).astype(np.float32)
        return obs, -float(np.sum(action ** 2)), False, False, {}


class FrameCounter(gym.Env):
    """Uniform RGB frames whose grey level says which episode and which frame it is; each frame
    earns -0.1 and the episode terminates at frame LENGTH."""
    LENGTH = 7
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}
    observation_space = gym.spaces.Box(0, 255, (48, 48, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.episode, self.t = render_mode, -1, 0

    @staticmethod
    def level(episode, frame):
        return (10 + 50 * episode + frame) % 256

    def render(self):
        return np.full((48, 48, 3), self.level(self.episode, self.t), np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self.render(), {}

    def step(self, action):
        self.t += 1
        return self.render(), -0.1, self.t >= self.LENGTH, False, {}


class Glimpse(gym.Env):
    """Each frame lights up its left or its right half at random; acting on the lit side pays.
    Discrete: action 0 (left) or 1 (right) pays 1 on the lit side. Continuous: one action in
    [-1, 1] pays 1 - |action - centre of the lit side (-0.5 or +0.5)|. 8 frames an episode, so a
    perfect policy scores 8; a uniformly random one 4 (discrete) or 3 (continuous)."""
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}
    observation_space = gym.spaces.Box(0, 255, (FRAME, FRAME, 3), np.uint8)

    def __init__(self, continuous=False, render_mode=None):
        self.continuous, self.render_mode = continuous, render_mode
        self.action_space = (gym.spaces.Box(-1, 1, (1,), np.float32) if continuous
                             else gym.spaces.Discrete(2))

    def render(self):
        frame = np.zeros((FRAME, FRAME, 3), np.uint8)
        frame[:, self.side * FRAME // 2:(self.side + 1) * FRAME // 2] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        return self.render(), {}

    def step(self, action):
        if self.continuous:
            reward = 1.0 - abs(float(action[0]) - (self.side - 0.5))
        else:
            reward = float(int(action) == self.side)
        self.t, self.side = self.t + 1, int(self.np_random.integers(2))
        return self.render(), reward, self.t >= 8, False, {}


gym.register("tests/Counter-v0", entry_point=CounterEnv, max_episode_steps=COUNTER_MAX_STEPS)
gym.register("tests/BoxCounter-v0", entry_point=BoxCounterEnv, max_episode_steps=COUNTER_MAX_STEPS)
gym.register("tests/NarrowAction-v0", entry_point=NarrowActionEnv, max_episode_steps=7)
gym.register("tests/FrameCounter-v0", entry_point=FrameCounter)
gym.register("tests/Glimpse-v0", entry_point=Glimpse)
gym.register("tests/GlimpseContinuous-v0", entry_point=Glimpse, kwargs={"continuous": True})
# the real CarRacing, cut to 48 frames (12 steps of 4 frames) so that an episode costs ~0.5 s
gym.register("tests/CarRacingShort-v3", entry_point=ppo_atari_carracing.CAR_RACING,
             max_episode_steps=48, reward_threshold=900)
# 50 frames: the time limit falls on the second frame of a 4-frame action, one that is not drawn
gym.register(
    "tests/CarRacing50-v3", entry_point=ppo_atari_carracing.CAR_RACING, max_episode_steps=50
)


class Faulty(gym.Wrapper):
    """One of the toy envs above that goes wrong at its `at`-th step (counted over episodes):
    `fault` "raise" raises, "nan-reward" and "nan-obs" return a NaN, "huge-reward" returns a
    reward whose square overflows float32."""

    def __init__(self, env_id, fault, at, **kwargs):
        super().__init__(gym.make(env_id, **kwargs).unwrapped)
        self.fault, self.at, self.steps = fault, at, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.at:
            if self.fault == "raise":
                raise RuntimeError("the simulator crashed")
            if self.fault == "nan-reward":
                reward = float("nan")
            if self.fault == "nan-obs":
                obs = np.full_like(obs, np.nan)
            if self.fault == "huge-reward":
                reward = 1e30
        return obs, reward, terminated, truncated, info


# each script's kind of env, going wrong in the second rollout of conftest.TINY's run
for fault in ("raise", "nan-reward", "nan-obs", "huge-reward"):
    gym.register(f"tests/Faulty-{fault}-ppo-v0", entry_point=Faulty, max_episode_steps=5,
                 kwargs=dict(env_id="tests/Counter-v0", fault=fault, at=40))
    gym.register(f"tests/Faulty-{fault}-ppo_continuous-v0", entry_point=Faulty,
                 max_episode_steps=5, kwargs=dict(env_id="tests/BoxCounter-v0", fault=fault, at=80))
    gym.register(f"tests/Faulty-{fault}-ppo_atari_carracing-v0", entry_point=Faulty,
                 kwargs=dict(env_id="tests/FrameCounter-v0", fault=fault, at=20))


def needs_a_package():
    raise ModuleNotFoundError("No module named 'not_installed_here'")


gym.register("tests/NeedsAPackage-v0", entry_point=needs_a_package)
