"""Proximal Policy Optimization for continuous actions, in one file.

    python ppo_continuous.py --env-id LunarLanderContinuous-v3    # train (add --cuda for a GPU)
    python ppo_continuous.py --eval-checkpoint runs/<run>/agent.pt   # evaluate a saved agent

Trains an actor-critic with the clipped surrogate objective of Schulman et al. 2017,
"Proximal Policy Optimization Algorithms" (arXiv:1707.06347), on a gymnasium env with a `Box`
action space and a flat `Box` observation: Pendulum-v1, MountainCarContinuous-v0,
LunarLanderContinuous-v3, BipedalWalker-v3 and BipedalWalkerHardcore-v3 with the box2d extra,
and the MuJoCo tasks (HalfCheetah-v5, Hopper-v5, ...) once `pip install "gymnasium[mujoco]"`
has installed MuJoCo.

The skeleton, and every detail not specific to continuous control, is that of ppo.py (see its
docstring). What differs follows the PPO paper's continuous-control set-up (section 6.1) and the
continuous-action details of "The 37 Implementation Details of PPO" (Huang et al. 2022): a
diagonal Gaussian policy whose mean comes from a tanh MLP and whose log std is a
state-independent parameter, actions clipped to the bounds only on their way to the env,
observations normalised by a running mean and variance, rewards scaled by the running std of the
discounted return, both clipped to +-10, and the recipe of the paper's MuJoCo runs (2048 steps
per rollout, 32 minibatches, 10 epochs, lr 3e-4 annealed, no entropy bonus).

Several processes train one agent under torchrun exactly as in ppo.py (see its docstring):
--num-envs and --total-timesteps count over all processes, gradients are averaged at every
minibatch step, and only the first process writes.

How to read it: top to bottom, the algorithm first and in one piece: `Args`, the environment, the
agent (with its observation normaliser and Gaussian policy), the PPO math as pure functions, the
two phases of an iteration (collect, then update), and `train`, which is Algorithm 1 of the
paper. Everything after `train` is plumbing that a reader may skip, the same as ppo.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import pickle
import random
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro


@dataclass
class Args:
    # --- experiment ---
    exp_name: str = "ppo_continuous"
    """name of the experiment; part of the run name runs/<env>__<exp>__<seed>__<time>"""
    seed: int = 1
    """seed of python, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """use deterministic torch kernels (`torch.backends.cudnn.deterministic`)"""
    cuda: bool = False
    """train on the GPU when one is available (falls back to the CPU with a notice)"""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for small MLPs and leaves a core to the envs
    (the count also changes floating-point summation order, hence results at a fixed seed)"""
    run_dir: str = "runs"
    """folder in which each run gets its own sub-folder (TensorBoard events, checkpoint, summary)"""
    track: bool = False
    """log the run's metrics to Weights & Biases as well (an optional install: pip install wandb;
    WANDB_MODE=offline logs without an account)"""
    wandb_project_name: str = "ppo"
    """the Weights & Biases project, with --track"""
    wandb_entity: str | None = None
    """the Weights & Biases team or user, with --track (None: your default)"""

    # --- environment ---
    env_id: str = "LunarLanderContinuous-v3"
    """gymnasium id of an env with a Box action space and a flat Box observation"""
    num_envs: int = 1
    """number of parallel environments (under torchrun: over all processes, a multiple of them)"""
    async_envs: bool = False
    """step the envs in subprocesses (gymnasium AsyncVectorEnv); pays off for slow envs only"""
    total_timesteps: int = 1_000_000
    """total environment steps (over all envs and processes) to train for"""
    norm_obs: bool = True
    """normalise observations by a running mean and variance (kept in the checkpoint), clipped
    to +-10"""
    norm_reward: bool = True
    """divide rewards by the running std of the discounted return, clipped to +-10"""

    # --- algorithm ---
    learning_rate: float = 3e-4
    """Adam learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    num_steps: int = 2048
    """steps per env per rollout; the batch is num_envs * num_steps"""
    gamma: float = 0.99
    """discount factor (also of the return whose std scales the rewards)"""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation"""
    num_minibatches: int = 32
    """minibatches per epoch; must divide the batch"""
    update_epochs: int = 10
    """passes over the batch per update"""
    norm_adv: bool = True
    """normalise advantages within each minibatch"""
    clip_coef: float = 0.2
    """epsilon of the clipped surrogate objective (and of the value clip)"""
    clip_vloss: bool = True
    """clip the value update around the rollout's values, as in openai/baselines"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    kl_mode: Literal["clip", "early-stop", "penalty"] = "clip"
    """how the new policy is kept near the old one: 'clip' (the clipped objective; with
    --target-kl, the update also stops once approx KL passes it, as CleanRL's --target-kl does),
    'early-stop' (the same as 'clip' with --target-kl, 0.01 if not given), 'penalty' (the PPO
    paper's adaptive KL penalty on the unclipped surrogate, aiming at --target-kl, 0.01 if not
    given)"""
    target_kl: float | None = None
    """the KL target: alone, it turns on early stopping of the update's epochs (CleanRL's
    meaning); with --kl-mode penalty, the KL the adaptive coefficient aims at"""
    kl_beta: float = 1.0
    """initial KL penalty coefficient for 'penalty' (adapted after every update)"""
    hidden_size: int = 64
    """width of the two hidden layers of actor and critic"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the hidden layers' activation (tanh: the PPO paper's; relu: the seed example's other
    choice)"""
    ortho_init: bool = True
    """orthogonal initialisation with the 37 details' gains (off: PyTorch's default init)"""
    init_action_std: float = 1.0
    """the policy's std at the start (its log is the learnt parameter): 1 explores a whole [-1, 1]
    action range; Andrychowicz et al. 2021 ("What Matters in On-Policy RL", sec. 3.2) recommend
    starting lower"""
    final_action_std: float | None = None
    """if set, cap the std on a line from init_action_std at the first iteration to this at the
    last (annealed like the learning rate), so that the last updates train the mean action that
    the greedy evaluation runs; None leaves the learnt std free"""

    # --- evaluation and checkpoints ---
    eval_episodes: int = 100
    """episodes for the final evaluation (greedy and sampled), and for --eval-checkpoint; 100, as
    the benchmark: fewer leave a return's spread over start states in the mean, and one env per
    episode in lockstep costs seconds here"""
    eval_checkpoint: str | None = None
    """evaluate this saved agent.pt instead of training"""
    resume: str | None = None
    """continue the run saved in this agent.pt, in its folder, with its own settings (only --cuda
    is taken from the command line): weights, optimiser, schedules, statistics and random-number
    generators continue; episodes restart (an env's state cannot be saved)"""
    save_every: float = 10.0
    """minutes between periodic checkpoints of the last completed update (0: only at the end and
    when the run stops early: Ctrl-C, SIGTERM, SIGHUP, an error)"""
    watch: bool = False
    """with --eval-checkpoint: play the agent's greedy episodes in a window, one env at a time
    (needs a display; on a server, --capture-video writes them as mp4 instead)"""
    capture_video: bool = False
    """write mp4 videos into the run folder: training episodes of env 0 (episodes 0, 1, 8, 27, ...,
    then every 1000th) and the first greedy evaluation episode"""

    # --- derived settings, computed in one place ---
    @property
    def kl_target(self) -> float:
        return 0.01 if self.target_kl is None else self.target_kl

    @property
    def early_stop(self) -> bool:
        """stop the update's epochs once approx KL > kl_target (the clipped objective only)"""
        clip_with_target = self.kl_mode == "clip" and self.target_kl is not None
        return self.kl_mode == "early-stop" or clip_with_target

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# =================================================================================================
# The environment
# =================================================================================================

def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """gymnasium's spec of an env id, also in the `module:EnvId` form gym.make accepts: importing
    the module registers one's own env (README, "Your own env")."""
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)
    return gym.spec(name)


def make_env(args: Args, training: bool = True, record: Callable[[int], bool] | None = None,
             video_prefix: str | None = None):
    """A thunk that makes one env. gym.make adds the TimeLimit that produces `truncated`;
    RecordEpisodeStatistics reports each finished episode's raw return and length. `training`
    changes nothing here: these tasks have no training-only wrapper (ppo_atari_carracing.py has)."""
    creator = os.getpid()

    def thunk():
        ignore_ctrl_c_in_worker(creator)
        # render_mode only when asked for: an env of one's own may not take the argument
        render = {"render_mode": "human" if args.watch else "rgb_array"}
        env = gym.make(args.env_id, **(render if args.watch or record else {}))
        # The Gaussian's support is unbounded: only what the env receives is clipped to its bounds.
        # The rollout stores the sampled action, so its stored log-prob and the update's ratio
        # stay exact (continuous detail 5 of the 37)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if record is not None:
            fps = env.metadata.get("render_fps") or 30
            env = RecordEpisodes(env, record, video_prefix, fps)
        return env
    return thunk


def make_vector_env(args: Args, num_envs: int, training: bool = True,
                    video_prefix: str | None = None) -> gym.vector.VectorEnv:
    """SAME_STEP autoreset: when an episode ends, `step` returns the first observation of the
    next episode and puts the true last observation in info["final_obs"]. So every stored
    transition (obs_t, a_t, r_t) lies inside one episode, and a truncated episode can still be
    bootstrapped from V(final_obs). (gymnasium's default NEXT_STEP mode would instead spend one
    step per reset on a transition that crosses the boundary and must be masked out.)
    Videos come from env 0: in training with --capture-video, episodes on video_schedule; in
    evaluation, given a video_prefix, the first episode."""
    record = (video_schedule if training and args.capture_video
              else (lambda episode: episode == 0) if video_prefix is not None else None)
    thunks = [make_env(args, training, record if i == 0 else None, video_prefix)
              for i in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    return vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# =================================================================================================
# The agent
# =================================================================================================

NORM_CLIP = 10.0
"""normalised observations and scaled rewards are clipped to +-NORM_CLIP (as by openai/baselines'
VecNormalize)"""


class RunningMeanStd(nn.Module):
    """Mean and (population) variance of a stream, merged batch by batch with the parallel
    formula of Chan, Golub and LeVeque (1979), so any split of the stream gives numpy's mean and
    var of the whole. Buffers, not parameters: they are saved in the state_dict and the checkpoint,
    the optimiser never sees them. float64, as sums over millions of steps drift in float32."""

    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        batch = batch.reshape(-1, *self.mean.shape).to(torch.float64)
        batch_var, batch_mean = torch.var_mean(batch, 0, correction=0)
        n = batch.shape[0]
        if dist.is_initialized():  # torchrun: the batch of every process, so all normalise alike
            moments = mean_over_processes(torch.stack([batch_mean, batch_var + batch_mean ** 2]))
            batch_mean, batch_var = moments[0], (moments[1] - moments[0] ** 2).clamp(min=0)
            n *= dist.get_world_size()
        count = self.count.item()
        total = count + n
        delta = batch_mean - self.mean
        # in place (so the buffers stay ordinary tensors under torch.inference_mode), with python
        # scalars: this runs every env step, where each extra tensor op costs
        self.mean.add_(delta, alpha=n / total)
        self.var.mul_(count / total).add_(batch_var, alpha=n / total)
        self.var.add_(delta.square_(), alpha=count * n / total ** 2)
        self.count.fill_(total)


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (implementation detail 2 of the 37)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def keep_default_init(layer: nn.Module, std: float = 0.0) -> nn.Module:
    """--no-ortho-init: the layer keeps PyTorch's default initialisation (as the seed example can
    choose), the gain is ignored."""
    return layer

def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """What calling `layers(x)` computes, the same calls in the same order (so the same bits),
    without nn.Module's call machinery (hooks, tracing checks) for each layer, which at rollout
    batch sizes costs about as much as a small layer's arithmetic (docs/notes/speed.md)."""
    for layer in layers:
        x = layer.forward(x)
    return x


class Agent(nn.Module):
    """Separate actor and critic MLPs (PPO paper section 6.1: the MuJoCo runs share no
    parameters), a diagonal Gaussian policy, and the observation normaliser, so that one
    state_dict is the whole model and a saved agent sees its inputs scaled as in training."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int = 64, norm_obs: bool = True,
                 init_action_std: float = 1.0, activation: str = "tanh", ortho_init: bool = True):
        super().__init__()
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, hidden_size=hidden_size,
                           norm_obs=norm_obs, init_action_std=init_action_std,
                           activation=activation, ortho_init=ortho_init)
        self.obs_rms = RunningMeanStd((obs_dim,)) if norm_obs else None
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        init = layer_init if ortho_init else keep_default_init
        self.critic = nn.Sequential(
            init(nn.Linear(obs_dim, hidden_size)), act(),
            init(nn.Linear(hidden_size, hidden_size)), act(),
            init(nn.Linear(hidden_size, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            init(nn.Linear(obs_dim, hidden_size)), act(),
            init(nn.Linear(hidden_size, hidden_size)), act(),
            # a 0.01 gain starts every action's mean near 0, the middle of the usual bounds
            init(nn.Linear(hidden_size, act_dim), std=0.01),
        )
        # state-independent log std, learnt by the same gradient (continuous detail 2 of the 37)
        self.actor_logstd = nn.Parameter(torch.full((act_dim,), math.log(init_action_std)))

    def normalize(self, obs: torch.Tensor, update: bool = False) -> torch.Tensor:
        """What the networks see: (obs - mean) / std, clipped to +-10, as float32 (continuous
        details 6 and 7 of the 37). update=True only in training rollouts: the statistics are
        shared by all envs, and frozen everywhere else (evaluation, bootstrapping)."""
        obs = obs.float()
        if self.obs_rms is None:
            return obs
        if update:
            self.obs_rms.update(obs)
        rms = self.obs_rms
        return ((obs - rms.mean) / torch.sqrt(rms.var + 1e-8)).clamp(-NORM_CLIP, NORM_CLIP).float()

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return run_layers(self.critic, obs).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None,
                             greedy: bool = False):
        """Sample (or, greedy, take the mean) action for normalised observations; return it with
        its log-prob, the policy's entropy and the state value. The action is unbounded: the env's
        ClipAction wrapper clips what the env receives, never what the log-prob is taken of."""
        mean = run_layers(self.actor_mean, obs)
        log_std = self.actor_logstd.expand_as(mean)
        if action is None:
            # by hand rather than torch.distributions.Normal: several times cheaper at rollout
            # batch sizes (measured: docs/notes/speed.md)
            action = mean if greedy else mean + log_std.exp() * torch.randn_like(mean)
        return (action, gaussian_log_prob(action, mean, log_std), gaussian_entropy(log_std),
                self.get_value(obs))

    @torch.no_grad()
    def cap_action_std(self, cap: float) -> None:
        """A projection: the std stays learnt below the cap (--final-action-std)."""
        self.actor_logstd.clamp_(max=math.log(cap))


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor,
                      log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, diag(sigma^2)): the action dimensions are independent, so their log-densities
    add up (continuous detail 3 of the 37)."""
    z = (action - mean) / log_std.exp()
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """H = sum_i (log sigma_i + (1 + log 2 pi) / 2); it depends on the std only."""
    return (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)


def action_std_cap(iteration: int, num_iterations: int, init_std: float, final_std: float) -> float:
    """The most the policy's std may be in this iteration (1-based) under --final-action-std: a
    line from init_std at the first iteration to final_std at the last."""
    return init_std + (final_std - init_std) * (iteration - 1) / max(num_iterations - 1, 1)


def entropy_floor(action_space: gym.spaces.Box) -> float:
    """Entropy below which the policy has all but stopped exploring: that of a Gaussian whose std
    is 1% of each dimension's half-width (1% of 1 where a bound is infinite). A Gaussian's
    entropy has no maximum to take a share of, as a categorical's has."""
    half_width = (action_space.high - action_space.low) / 2
    std = 0.01 * np.where(np.isfinite(half_width), half_width, 1.0)
    return float(np.sum(np.log(std) + 0.5 * (1 + math.log(2 * math.pi))))



# =================================================================================================
# The PPO math: pure functions of arrays, tested against independent references in tests/
# =================================================================================================

def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                terminations: np.ndarray, truncations: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over a [T, N] rollout.

    next_values[t] is V of the state reached by step t: V(obs[t+1]) inside an episode, V of
    the true final observation when step t was truncated (by a time limit, say), anything when
    it terminated. A termination has no future (the next value is masked); a truncation does (it
    is bootstrapped, a time limit is not a death), but in both cases obs[t+1] belongs to a new
    episode, so the lambda-weighted sum stops there. Returns (advantages, returns)."""
    advantages = np.zeros_like(values)
    running = np.zeros_like(values[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        episode_continues = 1.0 - np.maximum(terminations[t], truncations[t])
        running = delta + gamma * gae_lambda * episode_continues * running
        advantages[t] = running
    return advantages, advantages + values


def adapt_kl_beta(beta: float, kl: float, target_kl: float) -> float:
    """The PPO paper's adaptive KL coefficient (section 4): double beta when the update moved the
    policy more than 1.5x the target, halve it when less than target/1.5."""
    if kl > 1.5 * target_kl:
        return beta * 2.0
    if kl < target_kl / 1.5:
        return beta / 2.0
    return beta


# =================================================================================================
# Several processes (torchrun): one agent, each process stepping its share of the envs
# =================================================================================================

def process_place() -> tuple[int, int]:
    """(global rank, number of processes) as torchrun sets them; (0, 1) for plain python."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join_processes(args: Args) -> None:
    """Under torchrun, join the other processes: gloo on CPU, nccl with --cuda (each process on
    cuda:LOCAL_RANK). From here on every collective below runs in all of them, in the same order."""
    if process_place()[1] > 1 and not dist.is_initialized():
        nccl = args.cuda and torch.cuda.is_available()
        if nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if nccl else "gloo")


@contextlib.contextmanager
def collective():
    """Around each exchange between processes: one that fails means another process has stopped
    (it says why, and torchrun stops the rest)."""
    try:
        yield
    except RuntimeError as err:
        raise ProcessLost("another torchrun process stopped") from err


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over the processes (x itself in a process of its own)."""
    if not dist.is_initialized():
        return x
    total = x.detach().clone()
    with collective():
        dist.all_reduce(total)
    return total / dist.get_world_size()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Each gradient replaced by its mean over the processes, in one all-reduce of them all laid
    end to end: every process then takes the same step, and the weights stay identical."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    mean = mean_over_processes(torch.cat([g.reshape(-1) for g in grads]))
    for grad, part in zip(grads, mean.split([g.numel() for g in grads])):
        grad.copy_(part.view_as(grad))


def start_alike(agent: nn.Module) -> None:
    """Every process starts from the first process's weights and statistics."""
    if dist.is_initialized():
        with collective():
            for tensor in agent.state_dict().values():
                dist.broadcast(tensor, 0)


def gather_over_processes(items: list) -> list:
    """Every process's list, joined in rank order, in every process."""
    if not dist.is_initialized():
        return items
    lists = [None] * dist.get_world_size()
    with collective():
        dist.all_gather_object(lists, items)
    return [item for part in lists for item in part]


# =================================================================================================
# Collect: run the policy for num_steps steps in each env
# =================================================================================================

class RewardScaler:
    """Rewards divided by the running std of the discounted return of each env (details 8 and 9
    of the 37's continuous list, openai/baselines' VecNormalize): the value targets get a similar
    scale whatever the task's reward units. Not centred: shifting rewards would change what an
    agent gains by ending or prolonging an episode. The return restarts at every episode end."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma = gamma
        self.returns = np.zeros(num_envs)
        self.rms = RunningMeanStd()

    def __call__(self, reward: np.ndarray, ended: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self.rms.update(torch.from_numpy(self.returns))
        self.returns[ended] = 0.0
        return np.clip(reward / math.sqrt(self.rms.var.item() + 1e-8), -NORM_CLIP, NORM_CLIP)


@dataclass
class Rollout:
    """One batch of experience, [num_steps, num_envs, ...], allocated once and refilled: the
    observations as the networks saw them (uint8 frames stay uint8, a quarter of the memory),
    the actions as sampled, the rewards as the critic learns them (scaled with --norm-reward)."""
    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    values: np.ndarray
    next_values: np.ndarray

    @classmethod
    def empty(cls, num_steps: int, num_envs: int, observation_space: gym.spaces.Box,
              action_space: gym.spaces.Space) -> Rollout:
        def zeros(shape: tuple[int, ...] = (), dtype: type = np.float32) -> np.ndarray:
            return np.zeros((num_steps, num_envs, *shape), dtype=dtype)
        obs_dtype = np.uint8 if observation_space.dtype == np.uint8 else np.float32
        discrete = isinstance(action_space, gym.spaces.Discrete)
        return cls(obs=zeros(observation_space.shape, obs_dtype),
                   actions=zeros(action_space.shape, np.int64 if discrete else np.float32),
                   logprobs=zeros(), rewards=zeros(), terminations=zeros(), truncations=zeros(),
                   values=zeros(), next_values=zeros())


def finished_episodes(info: dict) -> list[tuple[int, float, int]]:
    """(env index, raw return, length) of each episode that ended in this step, from the
    RecordEpisodeStatistics wrapper; with SAME_STEP autoreset its info is under "final_info"."""
    final = info.get("final_info", {})
    if "episode" not in final:
        return []
    episode = final["episode"]
    return [(int(i), float(episode["r"][i]), int(episode["l"][i]))
            for i in np.flatnonzero(final["_episode"])]


@torch.inference_mode()
def collect_rollout(agent: Agent, envs: gym.vector.VectorEnv, obs: np.ndarray, rollout: Rollout,
                    reward_scaler: RewardScaler | None, device: torch.device):
    """Step all envs num_steps times with the current policy, from the observation `obs`. Returns
    the observation to start the next rollout from and the (raw return, length) of every episode
    that ended."""
    finished = []
    for t in range(len(rollout.rewards)):
        # stored as the networks saw it (normalised with this step's statistics, where the agent
        # normalises), so the update re-evaluates the policy on exactly the inputs that produced
        # the stored log-probs
        agent_obs = agent.normalize(torch.from_numpy(obs).to(device), update=True)
        action, logprob, _, value = agent.get_action_and_value(agent_obs)
        rollout.obs[t] = agent_obs.cpu().numpy()
        rollout.actions[t] = action.cpu().numpy()
        rollout.logprobs[t] = logprob.cpu().numpy()
        rollout.values[t] = value.cpu().numpy()
        obs, reward, terminated, truncated, info = envs.step(rollout.actions[t])
        check_finite(t, observation=obs, reward=reward)  # a NaN from the env stops the run here
        ended = terminated | truncated
        rollout.rewards[t] = reward if reward_scaler is None else reward_scaler(reward, ended)
        rollout.terminations[t] = terminated
        rollout.truncations[t] = truncated
        if ended.any():
            # Truncation is not termination: bootstrap from V(final_obs), the observation the
            # time limit cut off, which SAME_STEP autoreset keeps in info (obs is already a reset)
            cut = truncated & ~terminated
            if cut.any():
                final_obs = torch.from_numpy(np.stack(info["final_obs"][cut])).to(device)
                final_value = agent.get_value(agent.normalize(final_obs))
                rollout.next_values[t, cut] = final_value.cpu().numpy()
            finished += [(ret, length) for _, ret, length in finished_episodes(info)]

    # V(obs[t+1]) for every step that did not end an episode; the last step bootstraps from
    # the observation the next rollout will start from
    last_value = agent.get_value(agent.normalize(torch.from_numpy(obs).to(device))).cpu().numpy()
    ended = np.maximum(rollout.terminations, rollout.truncations).astype(bool)
    following = np.concatenate([rollout.values[1:], last_value[None]])
    rollout.next_values[:] = np.where(ended, rollout.next_values, following)
    return obs, finished


# =================================================================================================
# Update: the losses, then epochs of minibatch gradient steps on them
# =================================================================================================

def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """Per-minibatch advantage normalisation (detail 7): keeps the loss scale steady across
    tasks. Under torchrun, by the mean and std of the whole minibatch, every process's part."""
    if not dist.is_initialized():
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    n = advantages.numel() * dist.get_world_size()
    mean, square = mean_over_processes(torch.stack([advantages.mean(), advantages.square().mean()]))
    std = ((square - mean ** 2) * n / (n - 1)).clamp(min=0).sqrt()  # unbiased, as torch's std
    return (advantages - mean) / (std + 1e-8)


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


def approx_kl(logratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sample estimators of KL(pi_old || pi_new) from log(pi_new / pi_old) at actions drawn
    from pi_old (J. Schulman, "Approximating KL divergence", 2020): the naive mean of -logratio,
    unbiased but noisy and possibly negative, and mean((ratio - 1) - logratio), unbiased and
    never negative. Returns (old_approx_kl, approx_kl)."""
    return (-logratio).mean(), ((logratio.exp() - 1) - logratio).mean()


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var[returns - values] / Var[returns]: 1 is a perfect critic, <= 0 is no better than
    predicting the mean. NaN where the returns (nearly) do not vary, as when every episode of a
    solved CartPole lasts its 500 steps: the ratio is then rounding noise, not a verdict."""
    var = np.var(returns)
    if var <= 1e-8 * (1.0 + np.mean(returns) ** 2):
        return float("nan")
    return float(1 - np.var(returns - values) / var)


def update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout,
           advantages: np.ndarray, returns: np.ndarray, args: Args, kl_beta: float,
           device: torch.device) -> dict:
    """Several epochs of minibatch gradient steps on the PPO loss. Returns statistics of the
    last epoch in which a step was taken (the state the policy ends in), averaged over the
    processes; in penalty mode also update_kl, the KL the whole update made, which the paper's
    adaptive coefficient follows. Under torchrun each process holds its share of the batch and of
    every minibatch, and the gradients are averaged before each step."""
    batch_size = rollout.rewards.size  # this process's share (all of it, run alone)
    minibatch_size = batch_size // args.num_minibatches

    def flat(array):
        return torch.from_numpy(array.reshape(batch_size, *array.shape[2:])).to(device)
    b_obs, b_actions, b_logprobs = flat(rollout.obs), flat(rollout.actions), flat(rollout.logprobs)
    b_values, b_advantages, b_returns = flat(rollout.values), flat(advantages), flat(returns)

    clip = args.clip_coef if args.kl_mode != "penalty" else None
    params = list(agent.parameters())
    stop, stepped = False, None
    for epoch in range(args.update_epochs):
        stats = {key: [] for key in ("policy_loss", "value_loss", "entropy", "old_approx_kl",
                                     "approx_kl", "clipfrac")}
        permutation = torch.randperm(batch_size, device=device)
        for start in range(0, batch_size, minibatch_size):
            mb = permutation[start:start + minibatch_size]
            _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[mb],
                                                                            b_actions[mb])
            logratio = new_logprob - b_logprobs[mb]
            old_kl, kl = approx_kl(logratio)
            # early stop (OpenAI Spinning Up's PPO): once the policy has moved as far as the
            # target, before the next step rather than after it
            stop = args.early_stop and mean_over_processes(kl).item() > args.kl_target
            if stop:
                break

            mb_advantages = b_advantages[mb]
            if args.norm_adv:
                mb_advantages = normalize_advantages(mb_advantages)
            pg_loss = policy_loss(new_logprob, b_logprobs[mb], mb_advantages, clip)
            if args.kl_mode == "penalty":
                # L^KLPEN (PPO paper eq. 8), with the non-negative estimator as the sample KL
                pg_loss = pg_loss + kl_beta * kl
            v_loss = value_loss(new_value, b_values[mb], b_returns[mb],
                                args.clip_coef if args.clip_vloss else None)
            # the entropy bonus is subtracted: minimising the loss raises the entropy (detail 10)
            loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params)  # torchrun: every process takes the same step
            # a non-finite loss makes a non-finite gradient norm: stop before it reaches the weights
            if not torch.isfinite(nn.utils.clip_grad_norm_(params, args.max_grad_norm)):
                raise NonFinite("the loss or its gradient became non-finite in the update")
            optimizer.step()

            with torch.no_grad():
                clipfrac = ((logratio.exp() - 1).abs() > args.clip_coef).float().mean()
                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss),
                                   ("entropy", entropy.mean()), ("old_approx_kl", old_kl),
                                   ("approx_kl", kl), ("clipfrac", clipfrac)):
                    stats[key].append(value.detach())
            stepped = stats
        if stop:
            break

    # one device-to-host copy for all statistics rather than one per minibatch
    stepped = stepped or stats  # NaN if the KL passed the target before any step
    means = [torch.stack(values).mean() if values else torch.tensor(math.nan, device=device)
             for values in stepped.values()]
    summary = dict(zip(stepped, mean_over_processes(torch.stack(means)).tolist()))
    summary["epochs"] = epoch + 1
    summary["explained_variance"] = explained_variance(rollout.values.ravel(), returns.ravel())
    if args.kl_mode == "penalty":
        with torch.no_grad():
            logprobs = [agent.get_action_and_value(b_obs[i:i + minibatch_size],
                                                   b_actions[i:i + minibatch_size])[1]
                        for i in range(0, batch_size, minibatch_size)]
            _, kl = approx_kl(torch.cat(logprobs) - b_logprobs)
        summary["update_kl"] = mean_over_processes(kl).item()
    return summary


# =================================================================================================
# Training: Algorithm 1 of the PPO paper
# =================================================================================================

def train(args: Args) -> dict:
    """PPO, as in Algorithm 1 of the paper: for each iteration, run the policy for T steps in each
    of N envs, compute advantage estimates, then optimise the surrogate for K epochs of
    minibatches. Returns the run's summary (see RunLog.finish)."""
    args, resumed = resume_settings(args)  # --resume: the run's own settings and saved state
    validate_args(args)
    action_bounds = check_env_id(args.env_id)  # the env's own Box: ClipAction widens the wrapper's
    join_processes(args)  # torchrun: several processes train one agent, each with its own envs
    rank, processes = process_place()
    num_envs = args.num_envs // processes
    torch.set_num_threads(args.torch_threads)
    device = pick_device(args)
    seed_everything(args.seed + rank, args.torch_deterministic)

    envs = make_vector_env(args, num_envs)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    agent = Agent(obs_space.shape[0], action_space.shape[0], args.hidden_size, args.norm_obs,
                  args.init_action_std, args.activation, args.ortho_init).to(device)
    # eps 1e-5 as in openai/baselines (detail 3); the fused kernel does the whole step in one op
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    reward_scaler = RewardScaler(num_envs, args.gamma) if args.norm_reward else None
    rollout = require_memory(Rollout.empty(args.num_steps, num_envs, obs_space, action_space))
    first, kl_beta = 1, args.kl_beta
    if resumed:  # continue from the saved iteration, with the saved KL coefficient
        first, kl_beta = restore(resumed, agent, optimizer, reward_scaler)
    start_alike(agent)

    with RunLog(args, agent, optimizer, reward_scaler, envs, entropy_floor(action_bounds),
                resumed) as log:
        # env i of process r is env r * num_envs + i of one process with all of them
        obs, _ = envs.reset(seed=reset_seed(args.seed, first) + rank * num_envs)
        for iteration in range(first, args.num_iterations + 1):
            if args.anneal_lr:  # linearly towards 0 over training (detail 4)
                lr = args.learning_rate * (1 - (iteration - 1) / args.num_iterations)
                optimizer.param_groups[0]["lr"] = lr
            if args.final_action_std is not None:
                # after the last update and before the rollout, so that the rollout's log-probs
                # are those of the policy that acts; left free, BipedalWalker's std rises again
                # once the walk is learnt (docs/benchmark/bipedalwalker.md)
                agent.cap_action_std(action_std_cap(iteration, args.num_iterations,
                                                    args.init_action_std, args.final_action_std))
            obs, finished = collect_rollout(agent, envs, obs, rollout, reward_scaler, device)
            advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.next_values,
                                              rollout.terminations, rollout.truncations,
                                              args.gamma, args.gae_lambda)
            stats = update(agent, optimizer, rollout, advantages, returns, args, kl_beta, device)
            if args.kl_mode == "penalty":
                stats["kl_beta"] = kl_beta
                kl_beta = adapt_kl_beta(kl_beta, stats["update_kl"], args.kl_target)
            log.iteration(iteration, finished, stats, kl_beta,
                          {"learning_rate": optimizer.param_groups[0]["lr"],
                           "action_std": agent.actor_logstd.detach().exp().mean().item()})
    envs.close()
    return log.finish(device)


# =================================================================================================
# Plumbing: validation, checkpoints, evaluation, the run log, main. The algorithm ends above;
# everything below is the same in ppo.py, ppo_continuous.py and ppo_atari_carracing.py except
# validate_args and check_env_id (tests/test_shape.py holds them together).
# =================================================================================================

SCRIPT = os.path.basename(__file__)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class ConfigError(ValueError):
    """Bad user input: reported as one line, before anything is written."""


class NonFinite(RuntimeError):
    """A NaN or inf reached training; `rollout_step` is the rollout step at which the env returned
    it (None: it arose in the update)."""

    def __init__(self, what: str, rollout_step: int | None = None):
        super().__init__(what)
        self.rollout_step = rollout_step


class ProcessLost(RuntimeError):
    """Under torchrun, another process stopped: it says why."""


class RunStopped(Exception):
    """A training run stopped before its end, its last good checkpoint saved: one line for the
    user (none from a process that torchrun stopped because another one did: that one says why),
    and the process's exit status."""

    def __init__(self, message: str, status: int, quiet: bool = False):
        super().__init__(message)
        self.status, self.quiet = status, quiet


def check_finite(rollout_step: int, **arrays: np.ndarray) -> None:
    """Stop at the first NaN or inf an env returns, before anything learns from it."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise NonFinite(f"the env returned a non-finite {name}", rollout_step)


def require(args: Args, names: tuple[str, ...], ok: Callable[[Any], bool], allowed: str) -> None:
    """One line naming the first flag among `names` whose value is not `ok`, and what it allows."""
    for name in names:
        value = getattr(args, name)
        if not ok(value):
            raise ConfigError(f"--{name.replace('_', '-')} must be {allowed}, got {value}")


def require_common(args: Args) -> None:
    """The checks every script makes: the seed, where runs are written, and the sizes and
    coefficients whose values would make the math non-finite."""
    require(args, ("seed",), lambda v: 0 <= v < 2 ** 32, "in [0, 2**32)")
    require(args, ("exp_name",), lambda v: v not in ("", ".", "..") and "/" not in v
            and os.sep not in v, "a name without '/' (it names a folder inside --run-dir)")
    require(args, ("learning_rate",), lambda v: 0 < v <= 1, "in (0, 1]")
    require(args, ("clip_coef", "max_grad_norm"), lambda v: 0 < v < math.inf, "a positive number")
    require(args, ("target_kl",), lambda v: v is None or 0 < v < math.inf, "a positive number")
    require(args, ("kl_beta",), lambda v: 0 < v <= 1e4, "in (0, 1e4]")
    require(args, ("ent_coef", "vf_coef"), lambda v: 0 <= v < math.inf, "a finite number >= 0")
    require(args, ("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "in [0, 1]")
    require(args, ("save_every",), lambda v: 0 <= v < math.inf, "a number of minutes >= 0")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--track needs Weights & Biases, which is not installed: "
                          "pip install wandb")
    processes = process_place()[1]
    if processes > 1 and args.eval_checkpoint is not None:
        raise ConfigError("--eval-checkpoint runs in one process: use python, not torchrun")
    if args.num_envs % processes:  # checked on --resume too: the saved --num-envs
        raise ConfigError(f"--num-envs {args.num_envs} must be a multiple of the {processes} "
                          f"torchrun processes, which step an equal share of the envs each")
    if args.eval_checkpoint is not None or args.resume is not None:
        return
    share = args.batch_size // processes  # each process's part of every batch and minibatch
    if share % args.num_minibatches:
        of = "" if processes == 1 else f" / {processes} processes = {share}"
        raise ConfigError(f"--num-minibatches {args.num_minibatches} does not divide the batch of "
                          f"num_envs * num_steps = {args.batch_size}{of}")
    if args.num_iterations == 0:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is less than one batch "
                          f"(num_envs * num_steps = {args.batch_size})")
    if args.norm_adv and share // args.num_minibatches < 2:
        raise ConfigError(f"--num-minibatches {args.num_minibatches} leaves minibatches of one "
                          f"sample, whose advantages have no std to normalise by (--no-norm-adv)")
    require_writable_folder(args.run_dir)


def require_writable_folder(path: str) -> None:
    """--run-dir must be a folder this process can write in, or one it can make."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"--run-dir {path!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--run-dir {path!r}: {existing} is not writable here")


def require_memory(rollout: Rollout) -> Rollout:
    """Refuse, in one line, a rollout buffer larger than this machine's memory. numpy reserves it
    lazily, so without this check the run would be killed when the buffer first fills."""
    needed = sum(array.nbytes for array in dataclasses.astuple(rollout))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: nothing to compare with
        return rollout
    if needed > memory:
        raise ConfigError(f"--num-envs x --num-steps: the rollout needs {needed / 2 ** 30:.1f} "
                          f"GiB, more than this machine's {memory / 2 ** 30:.1f} GiB")
    return rollout


def validate_args(args: Args) -> None:
    """Fail fast, naming the flag, rather than deep inside torch or gymnasium."""
    require(args, ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps",
                   "torch_threads", "eval_episodes"), lambda v: v > 0, "a positive integer")
    require(args, ("hidden_size",), lambda v: 0 < v <= 8192, "in [1, 8192]")
    # a smaller std underflows float32 in the Gaussian's density
    require(args, ("init_action_std",), lambda v: 1e-6 <= v <= 1e6, "in [1e-6, 1e6]")
    require(args, ("final_action_std",), lambda v: v is None or 1e-6 <= v <= args.init_action_std,
            f"a positive number no larger than --init-action-std ({args.init_action_std})")
    require_common(args)


def check_env_id(env_id: str) -> gym.spaces.Box:
    """An unknown id or a wrong kind of env is the most common mistake; say what to do. Returns
    the env's action space."""
    try:
        env_spec(env_id)
    except Exception as err:  # gymnasium's own error, or a module:EnvId whose module is missing
        raise ConfigError(f"--env-id: unknown environment {env_id!r} "
                          f"({creation_error(err)})") from None
    try:
        env = gym.make(env_id)
    except Exception as err:  # a missing extra: MuJoCo tasks are registered without MuJoCo
        raise ConfigError(f"--env-id: cannot create {env_id}: {creation_error(err)}") from None
    action_space, observation_space = env.action_space, env.observation_space
    env.close()
    if isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"--env-id: {env_id} has discrete actions (Discrete); use ppo.py")
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise ConfigError(f"--env-id: {env_id} has a {action_space} action space; "
                          f"ppo_continuous.py needs a flat Box")
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise ConfigError(f"--env-id: {env_id} observations are {observation_space}, not a flat "
                          f"vector; for images use ppo_atari_carracing.py")
    return action_space


def creation_error(err: Exception) -> str:
    """One line on why an env could not be made: gymnasium's own message (it names the missing
    extra's pip install), or the exception's type and first line (an ImportError of one's own)."""
    message = str(err).splitlines()[0] if str(err) else ""
    return message if isinstance(err, gym.error.Error) else f"{type(err).__name__}: {message}"


def pick_device(args: Args) -> torch.device:
    """The GPU with --cuda (under torchrun, each process's own: cuda:LOCAL_RANK), else the CPU."""
    if args.cuda and not torch.cuda.is_available() and process_place()[0] == 0:
        print("--cuda given but no CUDA device is available; running on the CPU", file=sys.stderr)
    if args.cuda and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def reset_seed(seed: int, first_iteration: int) -> int:
    """The envs' reset seed: the run's own at its start; a resumed run's episodes restart (an
    env's state cannot be saved in general), from a seed of their own for that iteration."""
    if first_iteration == 1:
        return seed
    return int(np.random.SeedSequence([seed, first_iteration]).generate_state(1)[0])


def ignore_ctrl_c_in_worker(creator: int) -> None:
    """Called in each env thunk. In an async env worker (a process other than the one that made
    the thunk) Ctrl-C and a closed terminal's SIGHUP arrive too, but they are meant for the
    trainer, which saves its checkpoint and then ends the workers (with SIGTERM)."""
    if os.getpid() != creator:
        for sig in STOP_SIGNALS:
            if sig != signal.SIGTERM:
                signal.signal(sig, signal.SIG_IGN)


def on_cpu(tree: Any) -> Any:
    """A copy of a nest of dicts, lists and tuples whose tensors are copied to the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: on_cpu(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(on_cpu(value) for value in tree)
    return tree


def random_states() -> dict:
    """Every random-number generator a run draws from, as plain data and tensors."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}


def set_random_states(states: dict) -> None:
    name, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def make_checkpoint(agent: Agent, args: Args, global_step: int,
                    training: dict | None = None) -> dict:
    """Weights (normaliser statistics included), the agent's constructor arguments and the run's
    Args, all plain data and CPU tensors, so `torch.load(weights_only=True)` reads it anywhere;
    `training` adds what --resume needs (optimiser, schedules' position, statistics, generators)."""
    return {"format": f"{SCRIPT}/2", "model": on_cpu(agent.state_dict()), "agent": agent.config,
            "args": dataclasses.asdict(args), "global_step": global_step, "training": training}


def save_checkpoint(path: str, checkpoint: dict) -> None:
    """Written to a temporary file beside `path`, then renamed over it: a crash or a full disk
    while writing leaves the previous checkpoint whole, never a partial file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_checkpoint(path: str, flag: str) -> dict:
    """Load safely: weights_only=True refuses arbitrary pickled code from an untrusted file."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}: {path!r} is a folder; give the agent.pt inside it")
    if not os.path.isfile(path):
        raise ConfigError(f"{flag}: no such file {path!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if str(checkpoint.get("format")).endswith("/1"):
            raise ValueError("written by this script before its present layout (format /1)")
        missing = {"args", "agent", "model", "global_step", "training"} - set(checkpoint)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
        Args(**checkpoint["args"])
    except Exception as err:  # a truncated zip, a foreign pickle, missing keys: all mean "not ours"
        cause = str(err).splitlines()[0] if str(err) else ""
        if isinstance(err, pickle.UnpicklingError):  # torch's message invites unsafe loading
            cause = "it holds more than weights and plain data, so it was not loaded"
        raise ConfigError(f"{flag}: {path!r} is not a readable {SCRIPT} checkpoint "
                          f"({type(err).__name__}: {cause})") from None
    bad = [key for key, value in checkpoint["model"].items()
           if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise ConfigError(f"{flag}: {path!r} has non-finite weights ({bad[0]}); it cannot act")
    return checkpoint


def load_checkpoint(path: str, device: torch.device = torch.device("cpu"),
                    flag: str = "--eval-checkpoint") -> tuple[Agent, Args]:
    """The agent saved in `path` and the Args it was trained with (they say how to build its
    env)."""
    checkpoint = read_checkpoint(path, flag)
    try:
        agent = Agent(**checkpoint["agent"])
        agent.load_state_dict(checkpoint["model"])
    except Exception as err:  # metadata that does not fit the weights, or another script's
        cause = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"{flag}: {path!r} is not a readable {SCRIPT} checkpoint "
                          f"({type(err).__name__}: {cause})") from None
    return agent.to(device), Args(**checkpoint["args"])


def resume_settings(args: Args) -> tuple[Args, dict | None]:
    """--resume PATH continues the run saved there with the run's own settings (from the command
    line only --cuda, where it continues, is taken), and returns the checkpoint to restore."""
    if args.resume is None:
        return args, None
    checkpoint = read_checkpoint(args.resume, "--resume")
    if not checkpoint["training"]:
        raise ConfigError(f"--resume: {args.resume!r} holds an agent but no training state")
    settings = Args(**checkpoint["args"])
    return dataclasses.replace(settings, resume=args.resume, cuda=args.cuda), checkpoint


def restore(checkpoint: dict, agent: Agent, optimizer: torch.optim.Optimizer,
            reward_scaler: RewardScaler | None) -> tuple[int, float]:
    """Puts back what --resume's checkpoint saved; returns the iteration to continue from and the
    KL coefficient. The reward scaler keeps its statistics; its discounted returns restart with
    the episodes."""
    training = checkpoint["training"]
    agent.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(training["optimizer"])
    if reward_scaler is not None:
        reward_scaler.rms.load_state_dict(training["reward_scaler"])
    if process_place()[0] == 0:  # under torchrun the others keep streams of their own
        set_random_states(training["random_states"])
    return training["iteration"] + 1, training["kl_beta"]


def write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
    """H.264 in an mp4, which browsers, TensorBoard and W&B play, through imageio's ffmpeg plugin
    (its wheel carries ffmpeg). Frames are padded to even sizes, as the yuv420p format needs."""
    import imageio  # only needed for --capture-video
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    imageio.mimwrite(path, [np.pad(frame, pad, mode="edge") for frame in frames], fps=fps,
                     codec="libx264", pixelformat="yuv420p", macro_block_size=1)


def video_schedule(episode: int) -> bool:
    """Which training episodes --capture-video records (of env 0, numbered from 0): CleanRL's and
    gymnasium's capped cubic schedule, 0, 1, 8, 27, ..., 729, then every thousandth, so a long run
    shows its progress without filling the disk."""
    if episode < 1000:
        return round(episode ** (1 / 3)) ** 3 == episode
    return episode % 1000 == 0


class RecordEpisodes(gym.Wrapper):
    """Records the rendered frames of the episodes `record(episode)` picks and writes each, when
    it ends, as `<video_prefix>-episode-<episode>.mp4`. It runs inside the env's own process, so
    it also works with async envs. Nothing is recorded while video_prefix is None: a training
    run's folder is made after its envs, and RunLog then sets it. A video that cannot be written
    is said in one line on stderr, never silently missing."""

    def __init__(self, env: gym.Env, record: Callable[[int], bool], video_prefix: str | None,
                 fps: float):
        super().__init__(env)
        self.record, self.video_prefix, self.fps = record, video_prefix, fps
        self.episode, self.frames = -1, None
        # frames for a file need no display: SDL (pygame's renderer) would otherwise look for one
        # and print an XDG_RUNTIME_DIR error where there is none
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

    @staticmethod
    def path(video_prefix: str, episode: int) -> str:
        return f"{video_prefix}-episode-{episode}.mp4"

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self.episode += 1
        recording = self.video_prefix is not None and self.record(self.episode)
        self.frames = [self.env.render()] if recording else None
        return result

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.frames is not None:
            self.frames.append(self.env.render())
            if terminated or truncated:
                path = self.path(self.video_prefix, self.episode)
                try:
                    write_video(path, self.frames, self.fps)
                except Exception as err:  # a missing codec or a full disk costs the video only
                    print(f"{SCRIPT}: warning: could not write the video {path}: "
                          f"{type(err).__name__}: {err}", file=sys.stderr)
                self.frames = None
        return obs, reward, terminated, truncated, info


def eval_video_prefix(folder: str, step: int) -> str:
    """The first greedy evaluation episode's video is <prefix>-episode-0.mp4, named after the
    training step of the agent it shows, so each evaluation keeps its own."""
    return os.path.join(folder, f"eval-greedy-step-{step}")


def evaluate(agent: Agent, args: Args, episodes: int, greedy: bool, seed: int,
             device: torch.device, video_prefix: str | None = None) -> np.ndarray:
    """Raw return of `episodes` whole episodes on the env without its training-only wrappers,
    the observation statistics frozen. Each env plays a quota of consecutive episodes fixed
    before any starts (counting whichever finish first would favour the short ones): in-process
    envs are cheap, one per episode; an async env is a process, so at most num_envs of them.
    Seeds differ from training's, so the agent is scored on episodes it has not trained on. An
    episode whose return is not finite still ends: its return is reported as NaN or inf."""
    n = 1 if args.watch else min(episodes, args.num_envs) if args.async_envs else episodes
    envs = make_vector_env(args, n, training=False, video_prefix=video_prefix)
    quota = [episodes // n + (i < episodes % n) for i in range(n)]
    returns: list[list[float]] = [[] for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    while any(len(r) < q for r, q in zip(returns, quota)):
        with torch.inference_mode():
            agent_obs = agent.normalize(torch.from_numpy(obs).to(device))
            action, _, _, _ = agent.get_action_and_value(agent_obs, greedy=greedy)
        obs, _, _, _, info = envs.step(action.cpu().numpy())
        for i, ret, _ in finished_episodes(info):
            if len(returns[i]) < quota[i]:
                returns[i].append(ret)
    envs.close()  # waits for the workers, so a video written by one is complete
    return np.array([ret for env_returns in returns for ret in env_returns])


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: the saved agent, greedy and sampled, on the env it was trained on."""
    validate_args(args)
    torch.set_num_threads(1)  # evaluation's forward passes are small, as at the end of training
    device = pick_device(args)
    agent, train_args = load_checkpoint(args.eval_checkpoint, device)
    if args.env_id not in (Args().env_id, train_args.env_id):
        raise ConfigError(f"--env-id {args.env_id} differs from the checkpoint's env "
                          f"{train_args.env_id}: a checkpoint is evaluated on the env it learnt")
    try:
        check_env_id(train_args.env_id)
    except ConfigError as err:
        raise ConfigError(f"--eval-checkpoint: the checkpoint's env cannot be made here: "
                          f"{err}") from None
    # the env as the agent was trained on it; how to run it (async or not, in a window) from the
    # command line
    train_args = dataclasses.replace(train_args, async_envs=args.async_envs, watch=args.watch)
    if args.watch:
        require_display()
        returns = evaluate(agent, train_args, args.eval_episodes, True, args.seed + 100_000, device)
        print(f"{train_args.env_id} watched: {returns.mean():.2f} +- {returns.std():.2f} "
              f"over {len(returns)} greedy episodes")
        return {"env_id": train_args.env_id, "checkpoint": args.eval_checkpoint,
                "eval_greedy_mean": float(returns.mean()), "eval_greedy_std": float(returns.std())}
    video = None
    if args.capture_video:
        folder = os.path.dirname(os.path.abspath(args.eval_checkpoint))
        step = read_checkpoint(args.eval_checkpoint, "--eval-checkpoint")["global_step"]
        video = eval_video_prefix(folder, step)
    result = {"env_id": train_args.env_id, "checkpoint": args.eval_checkpoint}
    for mode in ("greedy", "sampled"):
        returns = evaluate(agent, train_args, args.eval_episodes, mode == "greedy",
                           args.seed + 100_000, device, video if mode == "greedy" else None)
        result[f"eval_{mode}_mean"] = float(returns.mean())
        result[f"eval_{mode}_std"] = float(returns.std())
        print(f"{train_args.env_id} {mode:>7}: {returns.mean():.2f} +- {returns.std():.2f} "
              f"over {len(returns)} episodes")
    if video and os.path.isfile(RecordEpisodes.path(video, 0)):
        print(f"video of the first greedy episode: {RecordEpisodes.path(video, 0)}")
    return result


def require_display() -> None:
    """--watch opens a window: say so in one line where there is no display to open it on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("--watch needs a display, and DISPLAY is not set here; "
                          "--capture-video writes the greedy episodes as mp4 instead")


def health_warnings(stats: dict, negative_ev_streak: int, min_entropy: float) -> dict[str, str]:
    """Symptoms of a run going wrong, against typical healthy PPO ranges (approx KL ~0.001-0.03,
    clip fraction ~0.05-0.3). Keys name the kind of symptom, so each kind is reported once."""
    found = {}
    if stats["approx_kl"] > 0.1:
        found["kl"] = (f"approx KL {stats['approx_kl']:.3f} is far above normal (< 0.03): "
                       f"lower the learning rate or stop early with --target-kl 0.01")
    if stats["clipfrac"] > 0.4:
        found["clipfrac"] = (f"clip fraction {stats['clipfrac']:.2f} is far above normal (< 0.3): "
                             f"the policy moves too far per update")
    if stats["entropy"] < min_entropy:
        found["entropy"] = (f"policy entropy {stats['entropy']:.4f} has collapsed: "
                            f"exploration has stopped")
    if negative_ev_streak >= 10:
        found["ev"] = (f"explained variance negative for {negative_ev_streak} updates: "
                       f"the critic is not learning")
    return found


def format_progress(step: int, total: int, sps: float, recent_return: float | None,
                    elapsed: float) -> str:
    left = (total - step) / sps if sps > 0 else float("inf")
    ret = "   n/a" if recent_return is None else f"{recent_return:8.2f}"
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "--:--:--"
    return (f"step {step:>10,}/{total:,} ({100 * step / total:5.1f}%) | {sps:7,.0f} SPS | "
            f"return(last 20) {ret} | elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))} "
            f"| left {eta}")


def new_run_folder(args: Args) -> str:
    """runs/<env>__<exp>__<seed>__<time>, made here: two runs started in the same second with the
    same name and seed get their own folders (-2, -3, ...) rather than one between them."""
    env = args.env_id.replace("/", "-").replace(":", "-")
    name = f"{env}__{args.exp_name}__{args.seed}__{int(time.time())}"
    for n in itertools.count(1):
        path = os.path.join(args.run_dir, name if n == 1 else f"{name}-{n}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue


class RunLog:
    """Everything a training run reports and keeps, in one place: its folder
    runs/<env>__<exp>__<seed>__<time>, TensorBoard, the episodes' statistics and the step at which
    they reached the env's "solved" level, the progress line, health warnings, and at the end the
    checkpoint, the final evaluation and summary.json. After each update it keeps a copy of the
    run's state (the last good checkpoint), saved every --save-every minutes and, once, whatever
    stops the run: Ctrl-C, SIGTERM, SIGHUP, a non-finite number, an error. Under torchrun every
    process keeps the episodes of all (so all see the same statistics), and only the first one
    writes anything."""

    def __init__(self, args: Args, agent: Agent, optimizer: torch.optim.Optimizer,
                 reward_scaler: RewardScaler | None, envs: gym.vector.VectorEnv,
                 min_entropy: float, resumed: dict | None = None):
        self.args, self.agent, self.optimizer = args, agent, optimizer
        self.reward_scaler, self.envs, self.min_entropy = reward_scaler, envs, min_entropy
        self.last_good = resumed
        self.episodes: list[tuple[int, float, int]] = []  # (global step, raw return, length)
        self.steps_to_threshold, self.global_step = None, 0
        if resumed is not None:
            self.episodes = [tuple(episode) for episode in resumed["training"]["episodes"]]
            self.steps_to_threshold = resumed["training"]["steps_to_threshold"]
            self.global_step = resumed["global_step"]
        self.threshold = env_spec(args.env_id).reward_threshold  # the env's "solved" level
        self.negative_ev_streak, self.shown = 0, set()
        self.interactive = sys.stdout.isatty()
        self.start, self.first_step = time.time(), self.global_step
        self.last_print, self.last_save = 0.0, self.start
        self.rank = process_place()[0]
        self.run_path = self.checkpoint_path = self.writer = None
        if self.rank == 0:
            self.open_outputs(resumed)

    def open_outputs(self, resumed: dict | None) -> None:
        """The run's folder (the stopped run's, resumed), videos, W&B, TensorBoard, and the first
        line on the terminal."""
        from torch.utils.tensorboard import SummaryWriter  # slow import, only needed to train
        args, envs = self.args, self.envs
        if resumed is None:
            self.run_path = new_run_folder(args)
        else:
            self.run_path = os.path.dirname(os.path.abspath(args.resume))
        self.checkpoint_path = os.path.join(self.run_path, "agent.pt")
        if args.capture_video:  # training episodes' videos, recorded by env 0 (make_vector_env)
            prefix = "train" if resumed is None else f"train-resumed-at-step-{self.global_step}"
            envs.set_attr("video_prefix", [os.path.join(self.run_path, prefix)]
                          + [None] * (envs.num_envs - 1))
        if args.track:  # before the writer: W&B mirrors its events, so both get the same metrics
            import wandb
            name = os.path.basename(self.run_path)
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=name,
                       id=re.sub(r"[^\w-]", "-", name)[-64:], resume="allow", dir=self.run_path,
                       config=dataclasses.asdict(args), sync_tensorboard=True)
        # resumed: TensorBoard hides what the stopped run logged after its checkpoint's step
        self.writer = SummaryWriter(self.run_path,
                                    purge_step=self.global_step + 1 if resumed else None)
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items()))
        total = args.num_iterations * args.batch_size
        processes = process_place()[1]
        print(f"{'resuming' if resumed else 'training'} {args.env_id} in {self.run_path}: "
              f"{total:,} steps ({args.num_iterations:,} iterations of {args.batch_size:,})"
              + (f" from step {self.global_step:,}" if resumed else "")
              + (f" by {processes} processes" if processes > 1 else "")
              + (f"; --total-timesteps {args.total_timesteps:,} is not a whole number of "
                 f"batches" if total != args.total_timesteps else ""), flush=True)

    def __enter__(self) -> RunLog:
        # SIGTERM (a scheduler, docker stop, torchrun when another process stopped) and SIGHUP (a
        # closed terminal or ssh session) stop the run as Ctrl-C does; signal handlers belong to
        # the main thread only
        self.main_thread = threading.current_thread() is threading.main_thread()
        self.handlers = ({sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
                         if self.main_thread else {})
        for sig in self.handlers.keys() - {signal.SIGINT}:
            signal.signal(sig, raise_keyboard_interrupt)
        # an async worker's error comes back as the exception this run's last line names;
        # gymnasium would also log it, with the worker's traceback, as warnings
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.filterwarnings("ignore", module=r"gymnasium\.vector\.async_vector_env")
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None:
            # save once: a second Ctrl-C or a second signal must not cut the save short
            for sig in self.handlers:
                signal.signal(sig, signal.SIG_IGN)
        self.quiet.__exit__(None, None, None)
        try:
            if kind is None:
                return False
            try:
                kept = self.save()
                where = (f"checkpoint saved to {self.checkpoint_path} (step {kept:,})"
                         if kept is not None else "no update was completed, so nothing was saved")
            except OSError as err:  # a full disk, say: the previous checkpoint is still whole
                where = (f"the checkpoint could not be written ({err}); "
                         f"{self.checkpoint_path} holds the one before, if any")
            if self.rank == 0:
                self.writer.close()
                self.stop_tracking(exit_code=1)
            self.envs.close(terminate=True)  # the workers may be mid-step: end them, don't wait
        finally:
            for sig, handler in self.handlers.items():
                signal.signal(sig, handler)
        if self.rank > 0:  # torchrun: the first process says where its checkpoint is
            where = "the first process keeps the checkpoint"
        if issubclass(kind, KeyboardInterrupt):
            name = error.args[0] if error.args else "SIGINT"
            raise RunStopped(f"interrupted by {name} after step {self.global_step:,}; {where}",
                             128 + signal.Signals[name].value, quiet=self.rank > 0) from None
        if issubclass(kind, ProcessLost):
            raise RunStopped(f"stopped after step {self.global_step:,}: {error} (torchrun's report "
                             f"says which and why); {where}", 1, quiet=self.rank > 0) from None
        if issubclass(kind, NonFinite):
            at = (f"at step {self.global_step + (error.rollout_step + 1) * self.args.num_envs:,}"
                  if error.rollout_step is not None else f"after step {self.global_step:,}")
            raise RunStopped(f"stopped: {error} {at}; {where}", 1) from None
        message = str(error).splitlines()[0] if str(error) else ""
        raise RunStopped(f"stopped by an error after step {self.global_step:,} "
                         f"({kind.__name__}: {message}); {where}", 1) from None

    def keep(self, iteration: int, kl_beta: float) -> None:
        """After each update: a copy of everything --resume needs, refused if not finite."""
        training = {"iteration": iteration, "kl_beta": kl_beta,
                    "optimizer": on_cpu(self.optimizer.state_dict()),
                    "reward_scaler": (on_cpu(self.reward_scaler.rms.state_dict())
                                      if self.reward_scaler is not None else None),
                    "random_states": random_states(), "episodes": len(self.episodes),
                    "steps_to_threshold": self.steps_to_threshold}
        checkpoint = make_checkpoint(self.agent, self.args, self.global_step, training)
        bad = [key for key, value in checkpoint["model"].items()
               if value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            raise NonFinite(f"the update left non-finite values in {bad[0]}")
        self.last_good = checkpoint

    def stop_tracking(self, exit_code: int) -> None:
        if self.args.track:
            import wandb
            wandb.finish(exit_code=exit_code)

    def save(self) -> int | None:
        """Writes the last good checkpoint; returns its step (None: there is none yet, or this
        is not the first of several processes)."""
        if self.last_good is None or self.rank > 0:
            return None
        training = self.last_good["training"]
        if isinstance(training["episodes"], int):  # the episodes up to that update, as a list
            training = {**training, "episodes": self.episodes[:training["episodes"]]}
        save_checkpoint(self.checkpoint_path, {**self.last_good, "training": training})
        self.last_save = time.time()
        return self.last_good["global_step"]

    def iteration(self, iteration: int, finished: list[tuple[float, int]], stats: dict,
                  kl_beta: float, charts: dict) -> None:
        """Once per iteration, after the update: the episodes that ended in its rollout, the
        update's statistics (TensorBoard's losses/), other curves (charts/), and the state to
        keep."""
        self.global_step = global_step = iteration * self.args.batch_size
        finished = gather_over_processes(finished)  # torchrun: every process's episodes
        self.episodes += [(global_step, ret, length) for ret, length in finished]
        recent = float(np.mean([r for _, r, _ in self.episodes[-20:]])) if self.episodes else None
        if (self.steps_to_threshold is None and self.threshold is not None
                and len(self.episodes) >= 20 and recent >= self.threshold):
            self.steps_to_threshold = global_step
        self.keep(iteration, kl_beta)
        if self.rank > 0:
            return

        for ret, length in finished:
            self.writer.add_scalar("charts/episodic_return", ret, global_step)
            self.writer.add_scalar("charts/episodic_length", length, global_step)
        now = time.time()
        sps = (global_step - self.first_step) / (now - self.start)
        for key, value in {"SPS": sps, **charts}.items():
            self.writer.add_scalar(f"charts/{key}", value, global_step)
        for key, value in stats.items():
            self.writer.add_scalar(f"losses/{key}", value, global_step)
        if self.args.save_every and now - self.last_save > 60 * self.args.save_every:
            self.save()

        negative_ev = stats["explained_variance"] < 0
        self.negative_ev_streak = self.negative_ev_streak + 1 if negative_ev else 0
        warnings = health_warnings(stats, self.negative_ev_streak, self.min_entropy)
        for key in warnings.keys() - self.shown:  # each kind once per run: TensorBoard has the rest
            print(("\n" if self.interactive else "") + f"warning (step {global_step:,}): "
                  f"{warnings[key]}", file=sys.stderr)
        self.shown |= set(warnings)

        last = iteration == self.args.num_iterations
        if self.interactive or now - self.last_print > 10 or last:
            line = format_progress(global_step, self.args.total_timesteps, sps, recent,
                                   now - self.start)
            print("\r" + line if self.interactive else line, end="" if self.interactive else "\n",
                  flush=True)
            self.last_print = now

    def finish(self, device: torch.device) -> dict:
        """After the last iteration: the checkpoint, the final evaluation (greedy and sampled),
        summary.json and one line on the terminal. Returns the summary (under torchrun, the first
        process's; the others return at once)."""
        args = self.args
        sps = (self.global_step - self.first_step) / (time.time() - self.start)
        if self.rank > 0:
            return {"env_id": args.env_id, "seed": args.seed, "global_step": self.global_step}
        if self.interactive:
            print()
        self.save()
        summary = {"env_id": args.env_id, "seed": args.seed, "run_dir": self.run_path,
                   "checkpoint": self.checkpoint_path, "global_step": self.global_step, "sps": sps,
                   "steps_to_threshold": self.steps_to_threshold,
                   "reward_threshold": self.threshold, "episodes": self.episodes}
        torch.set_num_threads(1)  # evaluation's forward passes are small, as in evaluate_checkpoint
        for mode in ("greedy", "sampled"):
            video = None
            if args.capture_video and mode == "greedy":
                video = eval_video_prefix(self.run_path, self.global_step)
            returns = evaluate(self.agent, args, args.eval_episodes, mode == "greedy",
                               args.seed + 100_000, device, video)
            summary[f"eval_{mode}_mean"] = float(returns.mean())
            summary[f"eval_{mode}_std"] = float(returns.std())
            self.writer.add_scalar(f"eval/{mode}_return", returns.mean(), self.global_step)
        self.writer.close()
        self.stop_tracking(exit_code=0)
        with open(os.path.join(self.run_path, "summary.json"), "w") as f:
            json.dump(summary, f)
        print(f"{args.env_id}: {self.global_step:,} steps at {sps:,.0f} SPS; evaluation over "
              f"{args.eval_episodes} episodes: greedy {summary['eval_greedy_mean']:.2f} "
              f"+- {summary['eval_greedy_std']:.2f}, sampled {summary['eval_sampled_mean']:.2f} "
              f"+- {summary['eval_sampled_std']:.2f}; checkpoint {self.checkpoint_path}")
        return summary


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP, in the trainer: stop as Ctrl-C does, naming the signal."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(args: Args) -> dict:
    """Train, or with --eval-checkpoint evaluate a saved agent. Bad input ends the process with
    one line naming the flag; a run that stops early, with one line saying why and where its
    checkpoint is, and status 128 + the signal's number when a signal stopped it."""
    try:
        return train(args) if args.eval_checkpoint is None else evaluate_checkpoint(args)
    except ConfigError as err:  # the same in every torchrun process: said by the first
        raise SystemExit(f"{SCRIPT}: error: {err}" if process_place()[0] == 0 else 2) from None
    except RunStopped as stop:
        if not stop.quiet:
            rank, processes = process_place()
            print(f"{SCRIPT}: " + (f"process {rank}: " if processes > 1 else "") + f"{stop}",
                  file=sys.stderr)
        raise SystemExit(stop.status) from None
    except KeyboardInterrupt:  # before the first update began, or during the final evaluation
        raise SystemExit(130) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()




if __name__ == "__main__":
    main(tyro.cli(Args))
