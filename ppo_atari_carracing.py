"""Proximal Policy Optimization from pixels, in one file: the Atari recipe applied to CarRacing-v3.

    python ppo_atari_carracing.py                            # CarRacing-v3 (add --cuda to use a GPU)
    python ppo_atari_carracing.py --continuous               # CarRacing-v3, steer/gas/brake, Beta policy
    python ppo_atari_carracing.py --env-id ALE/Breakout-v5   # an Atari game (needs: pip install ale-py)
    python ppo_atari_carracing.py --eval-checkpoint runs/<run>/agent.pt   # evaluate a saved agent

Trains an actor-critic with the clipped surrogate objective of Schulman et al. 2017,
"Proximal Policy Optimization Algorithms" (arXiv:1707.06347), from raw frames, with the
preprocessing and network of the paper's Atari experiments, which come from Mnih et al. 2015,
"Human-level control through deep reinforcement learning" (the "Nature DQN" paper): grey-scale
frames resized to 84x84, a stack of the last 4, each action repeated 4 frames, and the Nature CNN
shared by the policy and value heads.

CarRacing-v3 has two action interfaces and both work: its 5 discrete actions with a categorical
policy, and continuous (steer, gas, brake) with a Beta-distribution policy (Chou et al. 2017,
"Improving Stochastic Policy Gradients in Continuous Control with Deep RL using the Beta
Distribution"), whose samples lie inside the action bounds, so no clipping biases the gradient.
The discrete interface is the default: with the same recipe and 300k steps it scored 701 (two
seeds) against the Beta policy's 560 (one seed) here, and was ahead all along (README, Benchmark).
Atari games (ALE ids) get the rest of the Atari recipe: no-op and fire resets, max-pooled frame
skip, end of episode at a lost life, reward clipping.

The other implementation details follow "The 37 Implementation Details of PPO" (Huang et al.,
ICLR blog track 2022), as ppo.py does: vectorised (here asynchronous) envs, orthogonal init, Adam
eps 1e-5, linear learning-rate annealing, GAE (Schulman et al. 2016), minibatch advantage
normalisation, the clipped value loss, global gradient clipping, and the three ways of keeping the
new policy near the old one (clip, KL early stop, adaptive KL penalty).

A "step" here is one decision of the agent, as in CleanRL's Atari scripts: each is `action_repeat`
frames of the simulator. Every return reported is the sum of the env's own, unclipped rewards: in
evaluation over whole, unmodified episodes; in the training curves over the training episodes,
which the optional cut-off (--negative-reward-cutoff) may end early.

Read top to bottom: Args, the environment, the agent, the PPO math as pure functions, the two
phases of an iteration (collect, update), checkpoints and evaluation, then `train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Literal

import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclass
class Args:
    # --- experiment ---
    exp_name: str = "ppo_atari_carracing"
    """name of the experiment; part of the run name runs/<env>__<exp>__<seed>__<time>"""
    seed: int = 1
    """seed of python, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """use deterministic torch kernels (`torch.backends.cudnn.deterministic`)"""
    cuda: bool = False
    """train on the GPU when one is available (falls back to the CPU with a notice)"""
    torch_threads: int = 0
    """torch intra-op threads for the update, while the env workers wait: 0 means one per core.
    Collecting the rollout always uses one, leaving the cores to the env workers (a thread pool
    that spins while they step slows them down). The count changes results at a fixed seed"""
    run_dir: str = "runs"
    """folder in which each run gets its own sub-folder (TensorBoard events, checkpoint, summary)"""

    # --- environment ---
    env_id: str = "CarRacing-v3"
    """gymnasium id of an env with RGB-frame observations: CarRacing-v3, or an ALE/ Atari id"""
    continuous: bool = False
    """CarRacing only: continuous (steer, gas, brake) actions with a Beta policy instead of its 5
    discrete actions with a categorical policy. Discrete is the default because it learned
    faster in the benchmark here (README); Atari games are always discrete"""
    num_envs: int = 8
    """number of parallel environments"""
    async_envs: bool = True
    """step the envs in subprocesses (gymnasium AsyncVectorEnv): rendering a frame is the
    bottleneck, so this is what keeps every core busy"""
    total_timesteps: int = 1_000_000
    """total agent steps (over all envs) to train for; each is action_repeat frames"""
    frame_size: int = 84
    """frames are resized to frame_size x frame_size grey-scale (at least 36 for the Nature CNN)"""
    frame_stack: int = 4
    """number of most recent frames the agent sees, the oldest first"""
    action_repeat: int = 4
    """frames each action is repeated for (Atari: with the max over the last two frames)"""
    negative_reward_cutoff: int = 50
    """training only, non-ALE envs: end an episode (as a time limit, bootstrapped) after this many
    consecutive steps without positive reward; 0 turns it off. Never applied in evaluation"""

    # --- algorithm ---
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    num_steps: int = 128
    """steps per env per rollout; the batch is num_envs * num_steps"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation"""
    num_minibatches: int = 4
    """minibatches per epoch; must divide the batch"""
    update_epochs: int = 4
    """passes over the batch per update"""
    norm_adv: bool = True
    """normalise advantages within each minibatch"""
    clip_coef: float = 0.1
    """epsilon of the clipped surrogate objective (and of the value clip); 0.1 in the PPO paper's
    Atari runs"""
    clip_vloss: bool = True
    """clip the value update around the rollout's values, as in openai/baselines"""
    ent_coef: float = 0.01
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    kl_mode: Literal["clip", "early-stop", "penalty"] = "clip"
    """how the new policy is kept near the old one: 'clip' (clipped objective, KL only
    monitored), 'early-stop' (clipped objective, stop the update once approx KL > target_kl),
    'penalty' (the PPO paper's adaptive KL penalty on the unclipped surrogate)"""
    target_kl: float = 0.01
    """KL target for 'early-stop' and 'penalty'"""
    kl_beta: float = 1.0
    """initial KL penalty coefficient for 'penalty' (adapted after every update)"""

    # --- evaluation and checkpoints ---
    eval_episodes: int = 10
    """episodes for the final evaluation (deterministic and sampled), and for --eval-checkpoint"""
    eval_checkpoint: str | None = None
    """evaluate this saved agent.pt instead of training"""
    capture_video: bool = False
    """record the first deterministic evaluation episode as an mp4 file"""

    # --- derived sizes, computed in one place ---
    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


class ConfigError(ValueError):
    """Bad user input: reported as one line, before anything is written."""


# the smallest frame the Nature CNN's three convolutions leave at least one pixel of
MIN_FRAME_SIZE = 36


def validate_args(args: Args) -> None:
    """Fail fast, naming the flag, rather than deep inside torch or gymnasium."""
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps",
                 "eval_episodes", "frame_size", "frame_stack", "action_repeat"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.frame_size < MIN_FRAME_SIZE:
        raise ConfigError(f"--frame-size must be at least {MIN_FRAME_SIZE} for the Nature CNN, got {args.frame_size}")
    if args.torch_threads < 0:
        raise ConfigError(f"--torch-threads must be >= 0 (0: one per core), got {args.torch_threads}")
    if args.negative_reward_cutoff < 0:
        raise ConfigError(f"--negative-reward-cutoff must be >= 0 (0 turns it off), got {args.negative_reward_cutoff}")
    for name in ("learning_rate", "clip_coef", "max_grad_norm", "target_kl", "kl_beta"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    for name in ("ent_coef", "vf_coef"):
        if not getattr(args, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.eval_checkpoint is None:
        if args.batch_size % args.num_minibatches:
            raise ConfigError(
                f"--num-minibatches {args.num_minibatches} does not divide the batch of "
                f"num_envs * num_steps = {args.batch_size}")
        if args.num_iterations == 0:
            raise ConfigError(
                f"--total-timesteps {args.total_timesteps} is less than one batch "
                f"(num_envs * num_steps = {args.batch_size})")


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------

CAR_RACING = "gymnasium.envs.box2d.car_racing:CarRacing"


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def register_atari() -> None:
    """gymnasium 1.x knows the ALE ids only once ale_py has registered them; ale_py is optional."""
    try:
        import ale_py
    except ImportError:
        raise ConfigError("--env-id: Atari games need the Arcade Learning Environment: pip install ale-py") from None
    gym.register_envs(ale_py)


class ActionRepeat(gym.Wrapper):
    """Repeat each action for `repeat` frames and sum their rewards: the frame skip of the Atari
    recipe, without its max-pool (CarRacing's sprites do not flicker). A frame that ends the
    episode ends the repeat.

    CarRacing draws its 96x96 observation in every `step`, and that drawing is 97% of the step's
    time (the physics is about 0.3 ms). The agent sees only the last of the repeated frames, so
    the others are not drawn: `_render` is side-effect free (it reads the car and the track and
    writes only its own canvas), so the frames, rewards and episode ends are exactly those of the
    unmodified env, at about a quarter of the cost (tests/test_carracing.py checks this frame for
    frame). `skip_hidden_frames` is for CarRacing only, and never skips frames shown in a window."""

    def __init__(self, env: gym.Env, repeat: int, skip_hidden_frames: bool = False):
        super().__init__(env)
        self.repeat = repeat
        self.skip = skip_hidden_frames and env.unwrapped.render_mode != "human"

    def step(self, action):
        total = 0.0
        base = self.env.unwrapped
        for i in range(self.repeat):
            hidden = self.skip and i < self.repeat - 1
            if hidden:
                # an instance attribute shadows the method for this one step; it returns the last
                # drawn frame, so anything that checks the observation still sees a valid one
                base._render = lambda mode, last=base.state: last.copy()
                score_when_drawn = base.reward  # step draws before it charges the frame's -0.1
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            finally:
                if hidden:
                    del base._render
            total += float(reward)
            if terminated or truncated:
                if hidden:  # the episode ended on a frame that was not drawn: draw it now, with
                    # the score display as step would have drawn it
                    score, base.reward = base.reward, score_when_drawn
                    obs = base.state = base._render("state_pixels")
                    base.reward = score
                break
        return obs, total, terminated, truncated, info


class NegativeRewardCutoff(gym.Wrapper):
    """Training-only shortcut: end an episode after `limit` consecutive steps without a positive
    reward. A CarRacing car that is off the track or standing still earns -0.1 a frame until
    the 1000-frame limit, and those frames teach little. The cut is a truncation, not a
    termination: the episode's future is not zero, so it is bootstrapped from V(final_obs) as a
    time limit is, and the agent has no reason to seek or avoid being cut."""

    def __init__(self, env: gym.Env, limit: int):
        super().__init__(env)
        self.limit, self.count = limit, 0

    def reset(self, **kwargs):
        self.count = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count = 0 if reward > 0 else self.count + 1
        return obs, reward, terminated, truncated or self.count >= self.limit, info


class GreyResize(gym.ObservationWrapper):
    """RGB frame to one size x size grey-scale uint8 frame (Mnih et al. 2015): colour adds little
    for control and triples memory and compute. INTER_AREA averages the pixels a downscale merges
    rather than skipping some, so thin lines (road edges) do not flicker in and out."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_AREA)


class EpisodicLife(gym.Wrapper):
    """Atari: a lost life ends the episode for the learner (value 0 from there), but the game goes
    on until it is over (Mnih et al. 2015; openai/baselines' EpisodicLifeEnv). Losing a life is
    then as bad as dying, which speeds up learning in games with several lives."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        terminated = terminated or 0 < lives < self.lives
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # only a life was lost: carry on with the same game, from one no-op step on
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Atari games that wait for FIRE before play starts (Breakout) get it pressed at every reset,
    so the agent need not discover it (openai/baselines' FireResetEnv)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then a second action, as in baselines
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class RecordFirstEpisode(gym.Wrapper):
    """Records the env's rendered frames until its first episode ends, then writes them as an mp4.
    It runs inside the env's own process, so the video also works with async envs."""

    def __init__(self, env: gym.Env, path: str, fps: float):
        super().__init__(env)
        self.path, self.fps, self.frames, self.done = path, fps, [], False

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        if not self.done:
            self.frames = [self.env.render()]
        return result

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self.done:
            self.frames.append(self.env.render())
            if terminated or truncated:
                write_video(self.path, self.frames, self.fps)
                self.done, self.frames = True, []
        return obs, reward, terminated, truncated, info


def make_env(env_id: str, continuous: bool = False, frame_size: int = 84, frame_stack: int = 4,
             action_repeat: int = 4, negative_reward_cutoff: int = 0, video_path: str | None = None):
    """A thunk for the vector env; the wrappers below are listed in the order they apply to a
    frame. The episode statistics (unclipped return, length) are taken above the frame skip and
    below everything that changes rewards or where an episode ends for the learner, except the
    training cut-off, so that a cut training episode is still counted."""
    creator = os.getpid()

    def thunk():
        if os.getpid() != creator:
            # an async env worker: Ctrl-C in a terminal reaches it too, but it is meant for the
            # trainer, which saves its checkpoint and then stops the workers
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        render_mode = "rgb_array" if video_path is not None else None
        if is_atari(env_id):
            register_atari()  # again: a spawned worker process has not imported it
            # AtariPreprocessing does the frame skip itself, with the max over the last two frames
            # (some sprites are drawn only every other frame), so the ALE env must not skip. The v5
            # ids keep their sticky actions (repeat probability 0.25, Machado et al. 2018).
            env = gym.make(env_id, frameskip=1, render_mode=render_mode)
            env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=action_repeat, screen_size=frame_size,
                                                  terminal_on_life_loss=False, grayscale_obs=True)
            env = gym.wrappers.RecordEpisodeStatistics(env)
            if video_path is not None:
                env = RecordFirstEpisode(env, video_path, env.metadata.get("render_fps", 60) / action_repeat)
            env = EpisodicLife(env)
            if "FIRE" in env.unwrapped.get_action_meanings():
                env = FireReset(env)
            # reward clipping (Mnih et al. 2015): one learning rate fits games whose scores differ
            # by orders of magnitude; the statistics above still see the real score
            env = gym.wrappers.TransformReward(env, np.sign)
        else:
            car_racing = gym.spec(env_id).entry_point == CAR_RACING
            env = gym.make(env_id, render_mode=render_mode, **({"continuous": continuous} if car_racing else {}))
            env = ActionRepeat(env, action_repeat, skip_hidden_frames=car_racing)
            if negative_reward_cutoff > 0:
                env = NegativeRewardCutoff(env, negative_reward_cutoff)
            env = gym.wrappers.RecordEpisodeStatistics(env)
            if video_path is not None:
                env = RecordFirstEpisode(env, video_path, (env.metadata.get("render_fps") or 50) / action_repeat)
            env = GreyResize(env, frame_size)
        # shape (frame_stack, size, size), newest frame last; a reset fills the stack with copies
        # of the first frame, so nothing from the previous episode is seen
        return gym.wrappers.FrameStackObservation(env, frame_stack, padding_type="reset")
    return thunk


def env_options(args: Args, training: bool) -> dict:
    """The make_env options that Args asks for; evaluation drops the training-only cut-off."""
    return dict(continuous=args.continuous, frame_size=args.frame_size, frame_stack=args.frame_stack,
                action_repeat=args.action_repeat,
                negative_reward_cutoff=args.negative_reward_cutoff if training else 0)


def check_env_id(env_id: str) -> None:
    """An unknown id or a wrong kind of env is the most common mistake; say what to do."""
    if is_atari(env_id):
        register_atari()
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise ConfigError(f"--env-id: unknown environment {env_id!r} ({err})") from None
    env = gym.make(env_id)
    action_space, observation_space = env.action_space, env.observation_space
    env.close()
    shape = getattr(observation_space, "shape", None) or ()
    if not (isinstance(observation_space, gym.spaces.Box) and len(shape) == 3 and shape[-1] == 3
            and observation_space.dtype == np.uint8):
        script = "ppo_continuous.py" if isinstance(action_space, gym.spaces.Box) else "ppo.py"
        raise ConfigError(f"--env-id: {env_id} observations are {observation_space}, not RGB frames; "
                          f"use {script} for vector observations")
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1 or not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            raise ConfigError(f"--env-id: {env_id} has actions {action_space}; the Beta policy needs a "
                              f"flat Box with finite bounds")
    elif not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"--env-id: {env_id} has a {type(action_space).__name__} action space; "
                          f"ppo_atari_carracing.py needs Discrete or Box")


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = True, video_path: str | None = None,
                    **options):
    """SAME_STEP autoreset, as in ppo.py: when an episode ends, `step` returns the first
    observation of the next episode and puts the true last observation in info["final_obs"]. So
    every stored transition lies inside one episode, and a truncated episode (time limit or the
    training cut-off) can still be bootstrapped from V(final_obs). The first env records video."""
    thunks = [make_env(env_id, video_path=video_path if i == 0 else None, **options) for i in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def env_action(action: np.ndarray, action_space: gym.spaces.Space) -> np.ndarray:
    """The env's action for the policy's. The Beta policy acts in [0, 1]^d; the affine map onto
    the Box's bounds reaches every valid action and no invalid one, so nothing is clipped, and its
    constant Jacobian cancels in the PPO ratio."""
    if isinstance(action_space, gym.spaces.Box):
        return (action_space.low + (action_space.high - action_space.low) * action).astype(action_space.dtype)
    return action


def finished_episodes(info: dict) -> list[tuple[int, float, int]]:
    """(env index, unclipped return, length) of each episode that ended in this step, from the
    RecordEpisodeStatistics wrapper; with SAME_STEP autoreset its info is under "final_info".
    Counted there and not from terminated/truncated, because for Atari a lost life ends the
    learner's episode but not the game."""
    final = info.get("final_info", {})
    if "episode" not in final:
        return []
    episode = final["episode"]
    return [(int(i), float(episode["r"][i]), int(episode["l"][i])) for i in np.flatnonzero(final["_episode"])]


# ---------------------------------------------------------------------------------------------
# Agent
# ---------------------------------------------------------------------------------------------

def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights, zero bias (implementation detail 2 of the 37), for linear and conv layers."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


# a Beta sample is clamped this far inside (0, 1): float32 can round a sample to exactly 0 or 1,
# where the log-density of a Beta with alpha, beta > 1 is -inf
BETA_EPS = 1e-6


class Agent(nn.Module):
    """The Nature CNN (Mnih et al. 2015) as one trunk for the policy and value heads, as in the
    PPO paper's Atari runs and openai/baselines: from pixels, learning the features is most of the
    work and both heads need the same ones (ppo.py's MLPs are separate instead).

    Discrete actions: a categorical policy over n_actions. Continuous: a Beta(alpha, beta) per
    action dimension on [0, 1], mapped onto the action bounds by `env_action`. A Gaussian would put
    mass outside the bounds, and clipping it there biases the policy gradient (Chou et al. 2017)."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, continuous: bool):
        super().__init__()
        self.obs_shape, self.n_actions, self.continuous = tuple(obs_shape), n_actions, continuous
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(obs_shape[0], 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # 64 * 7 * 7 for 84x84 frames
            flat = self.network(torch.zeros(1, *obs_shape)).shape[1]
        self.network.append(layer_init(nn.Linear(flat, 512)))
        self.network.append(nn.ReLU())
        # a 0.01 gain starts the policy near uniform (categorical) or near Beta(1.7, 1.7) in each
        # dimension (continuous): broad, centred, so early rollouts explore
        self.actor = layer_init(nn.Linear(512, 2 * n_actions if continuous else n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        # observations travel as uint8 (4x less memory in the rollout buffer) and are scaled here
        return self.network(obs.float() / 255.0)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def beta(self, hidden: torch.Tensor) -> torch.distributions.Beta:
        """alpha, beta = 1 + softplus(.) > 1: the density is unimodal and vanishes at the bounds."""
        alpha, beta = (1.0 + F.softplus(self.actor(hidden))).chunk(2, dim=-1)
        return torch.distributions.Beta(alpha, beta, validate_args=False)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None,
                             greedy: bool = False):
        """Sample (or take the deterministic) action; return it with its log-prob, the policy's
        entropy and the state value. Continuous actions are in [0, 1]^d (see env_action)."""
        hidden = self.features(obs)
        value = self.critic(hidden).squeeze(-1)
        if self.continuous:
            dist = self.beta(hidden)
            if action is None:
                # deterministic: the mean, smooth in alpha and beta (the mode, (a-1)/(a+b-2),
                # is 0/0 as both approach 1)
                action = dist.mean if greedy else dist.sample().clamp(BETA_EPS, 1 - BETA_EPS)
            return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), value
        log_probs = torch.log_softmax(self.actor(hidden), dim=-1)
        if action is None:
            # Gumbel-max trick, as in ppo.py: argmax(log p + Gumbel noise) is a sample from p
            noise = 0.0 if greedy else -torch.log(-torch.log(torch.rand_like(log_probs)))
            action = (log_probs + noise).argmax(dim=-1)
        logprob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return action, logprob, categorical_entropy(log_probs), value


# ---------------------------------------------------------------------------------------------
# The PPO math: pure functions, imported by tests/ (the same as ppo.py's)
# ---------------------------------------------------------------------------------------------

def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H = -sum_a p(a) log p(a), over the last axis."""
    return -(log_probs.exp() * log_probs).sum(-1)


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                terminations: np.ndarray, truncations: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over a [T, N] rollout.

    next_values[t] is V of the state reached by step t: V(obs[t+1]) inside an episode, V of
    the true final observation when step t was truncated (time limit, training cut-off),
    anything when it terminated. A termination has no future (the next value is masked); a
    truncation does (it is bootstrapped), but in both cases obs[t+1] belongs to a new episode,
    so the lambda-weighted sum stops there. Returns (advantages, returns)."""
    advantages = np.zeros_like(values)
    running = np.zeros_like(values[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        episode_continues = 1.0 - np.maximum(terminations[t], truncations[t])
        running = delta + gamma * gae_lambda * episode_continues * running
        advantages[t] = running
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """Per-minibatch advantage normalisation (detail 7): keeps the loss scale steady across tasks."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                clip_coef: float | None) -> torch.Tensor:
    """Negated clipped surrogate, L^CLIP of the PPO paper (eq. 7), to be minimised.
    The max of the two negated terms is the pessimistic bound: once the ratio leaves
    [1 - eps, 1 + eps] in the direction the advantage favours, the gradient is zero.
    clip_coef=None gives the plain surrogate L^CPI (used with the KL penalty)."""
    ratio = (new_logprob - old_logprob).exp()
    unclipped = -advantages * ratio
    if clip_coef is None:
        return unclipped.mean()
    clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(unclipped, clipped).mean()


def value_loss(new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor,
               clip_coef: float | None) -> torch.Tensor:
    """0.5 * squared error to the GAE returns. With clip_coef, the pessimistic maximum with a
    prediction clipped to old_value +- eps, as in openai/baselines' ppo2 (detail 9)."""
    unclipped = (new_value - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_value = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_value - returns) ** 2).mean()


def entropy_bonus(entropy: torch.Tensor, ent_coef: float) -> torch.Tensor:
    """Loss term (to be minimised) that rewards entropy, so it is negative."""
    return -ent_coef * entropy.mean()


def approx_kl(logratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sample estimators of KL(pi_old || pi_new) from log(pi_new / pi_old) at actions drawn
    from pi_old (J. Schulman, "Approximating KL divergence", 2020): the naive mean of -logratio,
    unbiased but noisy and possibly negative, and mean((ratio - 1) - logratio), unbiased and
    never negative. Returns (old_approx_kl, approx_kl)."""
    return (-logratio).mean(), ((logratio.exp() - 1) - logratio).mean()


def adapt_kl_beta(beta: float, kl: float, target_kl: float) -> float:
    """The PPO paper's adaptive KL coefficient (section 4): double beta when the update moved the
    policy more than 1.5x the target, halve it when less than target/1.5."""
    if kl > 1.5 * target_kl:
        return beta * 2.0
    if kl < target_kl / 1.5:
        return beta / 2.0
    return beta


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var[returns - values] / Var[returns]: 1 is a perfect critic, <= 0 is no better than
    predicting the mean."""
    var = np.var(returns)
    return float("nan") if var == 0 else float(1 - np.var(returns - values) / var)


# ---------------------------------------------------------------------------------------------
# The two phases of an iteration
# ---------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    """One batch of experience, [num_steps, num_envs, ...], allocated once and refilled.
    Frames stay uint8: 128 x 8 stacks of 4 x 84 x 84 are 29 MB, not 116 MB as float32."""
    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    values: np.ndarray
    next_values: np.ndarray

    @classmethod
    def empty(cls, num_steps: int, num_envs: int, obs_shape: tuple[int, ...],
              action_shape: tuple[int, ...] = ()) -> "Rollout":
        """action_shape () holds discrete action indices, (d,) continuous actions in [0, 1]^d."""
        def zeros(*shape, dtype=np.float32):
            return np.zeros((num_steps, num_envs, *shape), dtype=dtype)
        return cls(obs=zeros(*obs_shape, dtype=np.uint8),
                   actions=zeros(*action_shape, dtype=np.float32 if action_shape else np.int64),
                   logprobs=zeros(), rewards=zeros(), terminations=zeros(), truncations=zeros(),
                   values=zeros(), next_values=zeros())


@torch.inference_mode()
def collect_rollout(agent: Agent, envs, obs: np.ndarray, rollout: Rollout, device: torch.device):
    """Step all envs num_steps times with the current policy. Returns the observation to start
    the next rollout from and the (return, length) of every episode that ended."""
    finished = []
    for t in range(rollout.rewards.shape[0]):
        action, logprob, _, value = agent.get_action_and_value(torch.from_numpy(obs).to(device))
        rollout.obs[t] = obs
        rollout.actions[t] = action.cpu().numpy()
        rollout.logprobs[t] = logprob.cpu().numpy()
        rollout.values[t] = value.cpu().numpy()
        obs, reward, terminated, truncated, info = envs.step(env_action(rollout.actions[t], envs.single_action_space))
        rollout.rewards[t] = reward
        rollout.terminations[t] = terminated
        rollout.truncations[t] = truncated

        ended = terminated | truncated
        if ended.any():
            # Truncation is not termination: bootstrap from V(final_obs), the observation the
            # time limit (or cut-off) interrupted, which SAME_STEP autoreset keeps in info.
            cut = truncated & ~terminated
            if cut.any():
                final_obs = torch.from_numpy(np.stack(info["final_obs"][cut]))
                rollout.next_values[t, cut] = agent.get_value(final_obs.to(device)).cpu().numpy()
            finished.extend((ret, length) for _, ret, length in finished_episodes(info))

    # V(obs[t+1]) for every step that did not end an episode; the last step bootstraps from
    # the observation the next rollout will start from.
    last_value = agent.get_value(torch.from_numpy(obs).to(device)).cpu().numpy()
    ended = np.maximum(rollout.terminations, rollout.truncations).astype(bool)
    following = np.concatenate([rollout.values[1:], last_value[None]])
    rollout.next_values[:] = np.where(ended, rollout.next_values, following)
    return obs, finished


def update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: np.ndarray,
           returns: np.ndarray, args: Args, kl_beta: float, device: torch.device) -> dict:
    """Several epochs of minibatch gradient steps on the PPO loss. Returns statistics of the
    last epoch completed (the state the policy ends in)."""
    def flat(array):
        return torch.from_numpy(array.reshape(args.batch_size, *array.shape[2:])).to(device)
    b_obs, b_actions, b_logprobs = flat(rollout.obs), flat(rollout.actions), flat(rollout.logprobs)
    b_values, b_advantages, b_returns = flat(rollout.values), flat(advantages), flat(returns)

    clip = args.clip_coef if args.kl_mode != "penalty" else None
    params = list(agent.parameters())
    stop = False
    for epoch in range(args.update_epochs):
        stats = {key: [] for key in ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")}
        permutation = torch.randperm(args.batch_size, device=device)
        for start in range(0, args.batch_size, args.minibatch_size):
            mb = permutation[start:start + args.minibatch_size]
            _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[mb], b_actions[mb])
            logratio = new_logprob - b_logprobs[mb]
            old_kl, kl = approx_kl(logratio)

            mb_advantages = normalize_advantages(b_advantages[mb]) if args.norm_adv else b_advantages[mb]
            pg_loss = policy_loss(new_logprob, b_logprobs[mb], mb_advantages, clip)
            if args.kl_mode == "penalty":
                # L^KLPEN (PPO paper eq. 8), with the non-negative estimator as the sample KL
                pg_loss = pg_loss + kl_beta * kl
            v_loss = value_loss(new_value, b_values[mb], b_returns[mb], args.clip_coef if args.clip_vloss else None)
            loss = pg_loss + entropy_bonus(entropy, args.ent_coef) + args.vf_coef * v_loss

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()

            with torch.no_grad():
                clipfrac = ((logratio.exp() - 1).abs() > args.clip_coef).float().mean()
                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy.mean()),
                                   ("old_approx_kl", old_kl), ("approx_kl", kl), ("clipfrac", clipfrac)):
                    stats[key].append(value.detach())
            # early stop (OpenAI Spinning Up's PPO): the policy has moved far enough this update
            stop = args.kl_mode == "early-stop" and kl.item() > args.target_kl
            if stop:
                break
        if stop:
            break

    # one device-to-host copy per statistic rather than one per minibatch
    summary = {key: torch.stack(values).mean().item() for key, values in stats.items()}
    summary["epochs"] = epoch + 1
    summary["explained_variance"] = explained_variance(rollout.values.ravel(), returns.ravel())
    return summary


# ---------------------------------------------------------------------------------------------
# Checkpoints and evaluation
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path: str, agent: Agent, args: Args, global_step: int) -> None:
    """Weights plus plain-data metadata only, so `torch.load(weights_only=True)` can read it."""
    # CPU tensors: a checkpoint trained with --cuda then opens with a plain torch.load anywhere
    weights = {key: value.cpu() for key, value in agent.state_dict().items()}
    torch.save({"format": "ppo_atari_carracing.py/1", "model": weights, "args": dataclasses.asdict(args),
                "obs_shape": list(agent.obs_shape), "n_actions": agent.n_actions, "continuous": agent.continuous,
                "global_step": global_step}, path)


def load_checkpoint(path: str, device: torch.device = torch.device("cpu")) -> tuple[Agent, Args, dict]:
    """Load safely: weights_only=True refuses arbitrary pickled code from an untrusted file.
    Returns the agent, the Args it was trained with (they say how to build its env) and the raw
    checkpoint."""
    if not os.path.isfile(path):
        raise ConfigError(f"--eval-checkpoint: no such file {path!r}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        train_args = Args(**checkpoint["args"])
        agent = Agent(tuple(checkpoint["obs_shape"]), checkpoint["n_actions"], checkpoint["continuous"])
        agent.load_state_dict(checkpoint["model"])
    except Exception as err:  # a truncated zip, a foreign pickle, missing keys: all mean "not ours"
        raise ConfigError(f"--eval-checkpoint: {path!r} is not a readable ppo_atari_carracing.py checkpoint "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return agent.to(device), train_args, checkpoint


def write_video(path: str, frames: list[np.ndarray], fps: float = 30) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def evaluate(agent: Agent, args: Args, episodes: int, greedy: bool, seed: int,
             device: torch.device, video_path: str | None = None) -> np.ndarray:
    """Unclipped return of `episodes` full episodes on the env without the training cut-off, on
    at most num_envs envs (each is a process holding a renderer). Env i plays a fixed quota of
    consecutive episodes, decided before any starts: counting whichever episodes finish first
    would favour the short ones. Seeds differ from training's, so the agent is scored on tracks
    (or games) it has not trained on. Atari keeps its life-loss episode ends, only so that FIRE
    is pressed after each lost life; the score counted is the whole game's."""
    n = min(episodes, args.num_envs)
    envs = make_vector_env(args.env_id, n, args.async_envs, video_path, **env_options(args, training=False))
    quota = [episodes // n + (i < episodes % n) for i in range(n)]
    returns: list[list[float]] = [[] for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    while any(len(r) < q for r, q in zip(returns, quota)):
        with torch.inference_mode():
            action, _, _, _ = agent.get_action_and_value(torch.from_numpy(obs).to(device), greedy=greedy)
        obs, _, _, _, info = envs.step(env_action(action.cpu().numpy(), envs.single_action_space))
        for i, ret, _ in finished_episodes(info):
            if len(returns[i]) < quota[i]:
                returns[i].append(ret)
    envs.close()  # waits for the workers, so a video written by one is complete
    return np.array([ret for env_returns in returns for ret in env_returns])


def evaluate_checkpoint(args: Args, device: torch.device) -> dict:
    agent, train_args, _ = load_checkpoint(args.eval_checkpoint, device)
    # the env as the agent was trained on it; how to run it (episodes, async, video) from the CLI
    train_args = dataclasses.replace(train_args, async_envs=args.async_envs)
    video = None
    if args.capture_video:
        video = os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "eval-greedy.mp4")
    result = {"env_id": train_args.env_id, "checkpoint": args.eval_checkpoint}
    for mode in ("greedy", "sampled"):
        returns = evaluate(agent, train_args, args.eval_episodes, mode == "greedy", args.seed + 100_000,
                           device, video if mode == "greedy" else None)
        result[f"eval_{mode}_mean"], result[f"eval_{mode}_std"] = float(returns.mean()), float(returns.std())
        print(f"{train_args.env_id} {mode:>7}: {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} episodes")
    if video:
        print(f"video of the first deterministic episode: {video}")
    return result


# ---------------------------------------------------------------------------------------------
# Terminal display
# ---------------------------------------------------------------------------------------------

def entropy_floor(n_actions: int, continuous: bool) -> float:
    """Entropy below which the policy has all but stopped exploring: 1% of the uniform policy's
    for categorical actions; for Beta actions, per dimension the differential entropy of a bell
    of std 0.01 (1% of the range), 0.5 * log(2 pi e 0.01^2)."""
    if continuous:
        return n_actions * 0.5 * math.log(2 * math.pi * math.e * 0.01 ** 2)
    return 0.01 * math.log(n_actions)


def health_warnings(stats: dict, negative_ev_streak: int, min_entropy: float) -> dict[str, str]:
    """Symptoms of a run going wrong, against typical healthy PPO ranges (approx KL ~0.001-0.03,
    clip fraction ~0.05-0.3). Keys name the kind of symptom, so each kind is reported once."""
    found = {}
    if stats["approx_kl"] > 0.1:
        found["kl"] = f"approx KL {stats['approx_kl']:.3f} is far above normal (< 0.03): lower the learning rate or use --kl-mode early-stop"
    if stats["clipfrac"] > 0.4:
        found["clipfrac"] = f"clip fraction {stats['clipfrac']:.2f} is far above normal (< 0.3): the policy moves too far per update"
    if stats["entropy"] < min_entropy:
        found["entropy"] = f"policy entropy {stats['entropy']:.4f} has collapsed: exploration has stopped"
    if negative_ev_streak >= 10:
        found["ev"] = f"explained variance negative for {negative_ev_streak} updates: the critic is not learning"
    return found


def format_progress(step: int, total: int, sps: float, recent_return: float | None, elapsed: float) -> str:
    left = (total - step) / sps if sps > 0 else float("inf")
    ret = "   n/a" if recent_return is None else f"{recent_return:8.2f}"
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "--:--:--"
    return (f"step {step:>10,}/{total:,} ({100 * step / total:5.1f}%) | {sps:7,.0f} SPS | "
            f"return(last 20) {ret} | elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))} | left {eta}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def pick_device(args: Args) -> torch.device:
    if args.cuda and not torch.cuda.is_available():
        print("--cuda given but no CUDA device is available; running on the CPU", file=sys.stderr)
    return torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def train(args: Args) -> dict:
    """PPO, as in Algorithm 1 of the paper: for each iteration, run the policy for T steps in N
    envs, compute advantages, then optimise the surrogate for K epochs of minibatches."""
    from torch.utils.tensorboard import SummaryWriter  # slow import, only needed to train

    validate_args(args)
    check_env_id(args.env_id)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    update_threads = args.torch_threads or cores
    device = pick_device(args)
    seed_everything(args.seed, args.torch_deterministic)

    envs = make_vector_env(args.env_id, args.num_envs, args.async_envs, **env_options(args, training=True))
    obs_shape = envs.single_observation_space.shape
    action_space = envs.single_action_space
    continuous = isinstance(action_space, gym.spaces.Box)
    n_actions = action_space.shape[0] if continuous else int(action_space.n)
    agent = Agent(obs_shape, n_actions, continuous).to(device)
    # eps 1e-5 as in openai/baselines (detail 3); the fused kernel does the whole step in one op
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    run_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_path = os.path.join(args.run_dir, run_name)
    writer = SummaryWriter(run_path)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
        f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items()))
    checkpoint_path = os.path.join(run_path, "agent.pt")

    rollout = Rollout.empty(args.num_steps, args.num_envs, obs_shape, (n_actions,) if continuous else ())
    episodes: list[tuple[int, float, int]] = []  # (global step, unclipped return, length)
    threshold = gym.spec(args.env_id).reward_threshold  # CarRacing: 900; a vector env has no spec of its own
    steps_to_threshold = None
    kl_beta, negative_ev_streak, shown_warnings = args.kl_beta, 0, set()
    min_entropy = entropy_floor(n_actions, continuous)
    interactive = sys.stdout.isatty()
    global_step, start, last_print = 0, time.time(), 0.0

    obs, _ = envs.reset(seed=args.seed)
    try:
        for iteration in range(1, args.num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / args.num_iterations)

            torch.set_num_threads(1)
            obs, finished = collect_rollout(agent, envs, obs, rollout, device)
            global_step += args.batch_size
            for ep_return, ep_length in finished:
                episodes.append((global_step, ep_return, ep_length))
                writer.add_scalar("charts/episodic_return", ep_return, global_step)
                writer.add_scalar("charts/episodic_length", ep_length, global_step)
            recent = float(np.mean([r for _, r, _ in episodes[-20:]])) if episodes else None
            if steps_to_threshold is None and threshold is not None and len(episodes) >= 20 and recent >= threshold:
                steps_to_threshold = global_step

            advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.next_values,
                                              rollout.terminations, rollout.truncations,
                                              args.gamma, args.gae_lambda)
            torch.set_num_threads(update_threads)  # the env workers are idle until the next rollout
            stats = update(agent, optimizer, rollout, advantages, returns, args, kl_beta, device)
            if args.kl_mode == "penalty":
                writer.add_scalar("losses/kl_beta", kl_beta, global_step)
                kl_beta = adapt_kl_beta(kl_beta, stats["approx_kl"], args.target_kl)

            sps = global_step / (time.time() - start)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            for key, value in stats.items():
                writer.add_scalar(f"losses/{key}", value, global_step)

            negative_ev_streak = negative_ev_streak + 1 if stats["explained_variance"] < 0 else 0
            warnings = health_warnings(stats, negative_ev_streak, min_entropy)
            for key in warnings.keys() - shown_warnings:  # each kind once per run: TensorBoard has the rest
                print(("\n" if interactive else "") + f"warning (step {global_step:,}): {warnings[key]}", file=sys.stderr)
            shown_warnings |= set(warnings)

            now = time.time()
            if interactive or now - last_print > 10 or iteration == args.num_iterations:
                line = format_progress(global_step, args.total_timesteps, sps, recent, now - start)
                print("\r" + line if interactive else line, end="" if interactive else "\n", flush=True)
                last_print = now
    except KeyboardInterrupt:
        save_checkpoint(checkpoint_path, agent, args, global_step)
        print(f"\ninterrupted at step {global_step:,}; checkpoint saved to {checkpoint_path}", file=sys.stderr)
        writer.close()
        # the env workers ignore Ctrl-C (see make_env) but may be mid-step: end them, don't wait
        envs.close(terminate=True)
        raise
    if interactive:
        print()
    envs.close()
    torch.set_num_threads(1)  # evaluation steps envs too
    sps = global_step / (time.time() - start)
    save_checkpoint(checkpoint_path, agent, args, global_step)

    summary = {"env_id": args.env_id, "seed": args.seed, "run_dir": run_path, "checkpoint": checkpoint_path,
               "global_step": global_step, "sps": sps, "steps_to_threshold": steps_to_threshold,
               "reward_threshold": threshold, "episodes": episodes}
    for mode in ("greedy", "sampled"):
        video = os.path.join(run_path, "eval-greedy.mp4") if args.capture_video and mode == "greedy" else None
        eval_returns = evaluate(agent, args, args.eval_episodes, mode == "greedy", args.seed + 100_000, device, video)
        summary[f"eval_{mode}_mean"], summary[f"eval_{mode}_std"] = float(eval_returns.mean()), float(eval_returns.std())
        writer.add_scalar(f"eval/{mode}_return", eval_returns.mean(), global_step)
    writer.close()
    with open(os.path.join(run_path, "summary.json"), "w") as f:
        json.dump(summary, f)
    print(f"{args.env_id}: {global_step:,} steps ({global_step * args.action_repeat:,} frames) at {sps:,.0f} SPS; "
          f"evaluation over {args.eval_episodes} episodes: "
          f"deterministic {summary['eval_greedy_mean']:.2f} +- {summary['eval_greedy_std']:.2f}, "
          f"sampled {summary['eval_sampled_mean']:.2f} +- {summary['eval_sampled_std']:.2f}; "
          f"checkpoint {checkpoint_path}")
    return summary


def main(args: Args) -> dict:
    """Train, or with --eval-checkpoint only evaluate a saved agent."""
    if args.eval_checkpoint is None:
        return train(args)
    validate_args(args)
    torch.set_num_threads(1)  # the forward passes of evaluation are small
    return evaluate_checkpoint(args, pick_device(args))


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ConfigError as err:  # bad input: one line naming the flag, no traceback
        raise SystemExit(f"ppo_atari_carracing.py: error: {err}")
    except KeyboardInterrupt:  # the checkpoint was saved by train
        raise SystemExit(130)
