"""ppo_atari_carracing.py beyond what every script shares (test_end_to_end.py, test_ppo_math.py):
the pixel preprocessing, the Nature CNN, the Beta policy against closed forms, evaluation on
several envs, a cheap learning check, and Atari. Most tests run on tiny fake image envs
(tests/toy_envs.py); the few on the real CarRacing use a 48-frame time limit so they stay cheap."""
import dataclasses
import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ppo_atari_carracing as pac
from conftest import ROOT
from toy_envs import FRAME as SIZE, FrameCounter

CPU = torch.device("cpu")


def frames_args(**overrides):
    """FrameCounter through the script's wrappers: one frame per action, no cut-off, 36x36."""
    return pac.Args(**{**dict(env_id="tests/FrameCounter-v0", frame_size=SIZE, action_repeat=1,
                              negative_reward_cutoff=0, async_envs=False), **overrides})


# --- preprocessing ------------------------------------------------------------------------------

def test_grey_resize_is_luminance_with_opencv_area_averaging():
    env = pac.GreyResize(FrameCounter(), 24)
    frame = np.zeros((48, 48, 3), np.uint8)
    frame[:, :, 0] = 255          # pure red: luminance 0.299 * 255 (ITU-R BT.601)
    frame[:24, :24] = [0, 255, 0]  # a green quadrant: 0.587 * 255
    grey = env.observation(frame)
    assert grey.shape == (24, 24) and grey.dtype == np.uint8
    assert env.observation_space == gym.spaces.Box(0, 255, (24, 24), np.uint8)
    assert abs(int(grey[20, 20]) - round(0.299 * 255)) <= 1
    assert abs(int(grey[5, 5]) - round(0.587 * 255)) <= 1
    # halving averages each 2x2 block: a block half red, half green is their mean
    half = np.zeros((4, 4, 3), np.uint8)
    half[:, 0, 0] = half[:, 2, 0] = 255
    half[:, 1, 1] = half[:, 3, 1] = 255
    assert np.all(np.abs(pac.GreyResize(FrameCounter(), 2).observation(half).astype(int)
                         - round((0.299 + 0.587) / 2 * 255)) <= 1)


def test_frames_are_stacked_newest_last_repeated_and_reset_clears_the_stack():
    level = FrameCounter.level
    env = pac.make_env(frames_args(frame_stack=4, action_repeat=2))()
    assert env.observation_space == gym.spaces.Box(0, 255, (4, SIZE, SIZE), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, SIZE, SIZE) and obs.dtype == np.uint8
    assert np.all(obs == level(0, 0))  # the first frame fills the stack: nothing older exists
    seen = [0]
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(0)
        seen.append(2 * step)  # each action lasts two frames; only the last one is observed
        expected = ([0] * 4 + seen)[-4:]
        assert [int(frame[0, 0]) for frame in obs] == [level(0, f) for f in expected]
        assert np.all(
            obs == obs[:, :1, :1]
        )  # every frame uniform: grey-scale and resize kept the level
        assert reward == pytest.approx(-0.2)  # the two frames' rewards summed
    # the fourth action is cut short by the termination at frame 7: one frame, one frame's reward
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and reward == pytest.approx(-0.1) and obs[-1, 0, 0] == level(0, 7)
    assert info["episode"]["r"] == pytest.approx(-0.7) and info["episode"]["l"] == 4
    obs, _ = env.reset()
    assert np.all(obs == level(1, 0))  # a new episode sees none of the previous one's frames


def carracing_trace(actions: np.ndarray, skip_hidden_frames: bool, fast_drawing: bool,
                    seed: int = 3) -> list:
    """(observation, reward, terminated, truncated, tiles reached) after every step of a
    50-frame CarRacing under ActionRepeat(4), resetting when an episode ends."""
    env = gym.make("tests/CarRacing50-v3")
    drawing = pac.FastDrawing(env) if fast_drawing else env
    env = pac.ActionRepeat(drawing, 4, skip_hidden_frames)
    assert env.skip == skip_hidden_frames
    obs, _ = env.reset(seed=seed)
    trace = [(obs, 0.0, False, False, 0)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trace.append((obs, reward, terminated, truncated, env.unwrapped.tile_visited_count))
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append((obs, 0.0, False, False, 0))
    # no skip stays behind: a frame is drawn by FastDrawing, or by the env itself
    assert env.unwrapped._render.__func__ is (pac.FastDrawing.drawing if fast_drawing
                                              else type(env.unwrapped)._render)
    env.close()
    return trace


@pytest.mark.parametrize("skip_hidden_frames, fast_drawing", [(True, False), (False, True),
                                                               (True, True)])
def test_carracing_drawn_faster_shows_the_agent_exactly_what_the_env_draws(skip_hidden_frames,
                                                                           fast_drawing):
    """The two ways CarRacing is drawn faster, each alone and together: ActionRepeat draws only
    the last of the repeated frames, FastDrawing draws each frame faster. Against the
    plain env, which draws every frame its own way, with the same track and actions: the same
    observations bit for bit, the same rewards and episode ends, over whole episodes. Random
    actions end two episodes on their time limit on frames that were not drawn (50 frames = 12
    steps of 4 and 2 frames of a 13th); full gas from seed 0 reaches a new tile on the last,
    undrawn frame, so the redrawn final frame must show the score with that tile in it."""
    rng = np.random.default_rng(0)
    random_actions = rng.uniform([-1, 0, 0], [1, 1, 0.2], (30, 3)).astype(np.float32)
    full_gas = np.tile(np.array([0, 1, 0], np.float32), (13, 1))
    for actions, seed in ((random_actions, 3), (full_gas, 0)):
        runs = [carracing_trace(actions, skip, fast, seed)
                for skip, fast in ((skip_hidden_frames, fast_drawing), (False, False))]
        assert len(runs[0]) == len(runs[1])
        for (obs, *rest), (obs_ref, *rest_ref) in zip(*runs):
            assert obs.shape == (96, 96, 3) and np.array_equal(obs, obs_ref)
            assert rest == rest_ref
        if seed == 3:  # two time limits on undrawn frames
            assert [t[2:4] for t in runs[1]].count((False, True)) == 2
        else:  # the last frame of the episode reached a tile: the score display changed in it
            last, before = runs[1][13], runs[1][12]
            assert last[3] and last[4] > before[4]


def test_carracing_video_frames_drawn_faster_are_the_envs():
    """The frames of a video (rgb_array, 600x400, skid marks drawn) through FastDrawing."""
    frames = []
    for fast in (True, False):
        env = gym.make("tests/CarRacing50-v3", render_mode="rgb_array")
        env = pac.FastDrawing(env) if fast else env
        env.reset(seed=1)
        frames.append([])
        for i in range(40):  # full gas, then a locked-wheel turn: the wheels leave skid marks
            env.step(np.array([0, 1, 0] if i < 20 else [1, 0, 1], np.float32))
            frames[-1].append(env.render())
        env.close()
    assert frames[0][0].shape == (400, 600, 3)
    assert all(np.array_equal(a, b) for a, b in zip(*frames))


def test_the_negative_reward_cutoff_truncates_in_training_and_never_in_evaluation():
    args = frames_args(negative_reward_cutoff=2)
    train_env = pac.make_env(args, training=True)()
    eval_env = pac.make_env(args, training=False)()
    train_env.reset(seed=0), eval_env.reset(seed=0)
    _, _, terminated, truncated, _ = train_env.step(0)
    assert not (terminated or truncated)
    _, _, terminated, truncated, info = train_env.step(0)
    # a truncation, so the rollout bootstraps from V(final_obs); the cut episode is still counted
    assert truncated and not terminated and info["episode"]["r"] == pytest.approx(-0.2)
    for _ in range(FrameCounter.LENGTH):
        _, _, terminated, truncated, info = eval_env.step(0)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["episode"]["l"] == FrameCounter.LENGTH


def test_rollout_keeps_frames_as_uint8_and_bootstraps_the_cut_episodes():
    args = frames_args(negative_reward_cutoff=3, frame_stack=2)
    envs = pac.EnvGroups(args, 2)
    obs, _ = envs.reset(seed=0)
    torch.manual_seed(0)
    agent = pac.Agent((2, SIZE, SIZE), 2, False)
    rollout = pac.Rollout.empty(8, 2, envs.single_observation_space, envs.single_action_space)
    _, finished = pac.collect_rollout(agent, envs, obs, rollout, None, CPU)
    envs.close()
    assert rollout.obs.dtype == np.uint8 and rollout.actions.dtype == np.int64
    # every third step is cut; the value it bootstraps from is V(the cut-off frames), not
    # V(the reset)
    assert (
        rollout.truncations[2].all()
        and rollout.truncations[5].all()
        and not rollout.terminations.any()
    )
    final = np.full((1, 2, SIZE, SIZE), FrameCounter.level(0, 3), np.uint8)
    final[0, 0] = FrameCounter.level(0, 2)
    with torch.no_grad():
        expected = agent.get_value(torch.from_numpy(final)).item()
    assert rollout.next_values[2, 0] == pytest.approx(expected, rel=1e-5)
    assert [length for _, length in finished] == [3, 3, 3, 3]
    assert all(ret == pytest.approx(-0.3) for ret, _ in finished)


# --- the network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("continuous", [False, True])
def test_nature_cnn_shapes(continuous):
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3 if continuous else 5, continuous)
    convs = [m for m in agent.network if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 8, 4),
        (64, 4, 2),
        (64, 3, 1),
    ]
    [linear] = [m for m in agent.network if isinstance(m, nn.Linear)]
    assert (linear.in_features, linear.out_features) == (64 * 7 * 7, 512)
    obs = torch.randint(0, 256, (6, 4, 84, 84), dtype=torch.uint8)
    assert agent.features(obs).shape == (6, 512)
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    assert action.shape == ((6, 3) if continuous else (6,))
    assert logprob.shape == entropy.shape == value.shape == agent.get_value(obs).shape == (6,)
    # one trunk: both heads read the same 512 features
    assert agent.actor.in_features == agent.critic.in_features == 512
    # uint8 frames are scaled to [0, 1] inside: a white frame reaches the convolutions as ones
    white = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    torch.testing.assert_close(agent.features(white), agent.network(torch.ones(1, 4, 84, 84)))


def test_a_saved_agent_loads_with_the_weight_layout_it_trained_with(tmp_path):
    """Training's convolutions run on channels-last weights, and a checkpoint stores them
    row-major; the loaded agent must be channels-last again, or the other rounding order sends an
    evaluation episode elsewhere (the shipped CarRacing agent scored 879.14 instead of its run's
    881.96 so)."""
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3, True)
    path = str(tmp_path / "agent.pt")
    pac.save_checkpoint(path, pac.make_checkpoint(agent, pac.Args(continuous=True), 0))
    loaded, _ = pac.load_checkpoint(path)
    for model in (agent, loaded):
        convs = [m.weight for m in model.network if isinstance(m, nn.Conv2d)]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        assert not all(w.is_contiguous() for w in convs)
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.equal(loaded.features(obs), agent.features(obs))


def test_impala_cnn_shapes():
    """--network impala: three stacks (16, 32, 32 channels) of a convolution, a stride-2 max-pool
    and two residual blocks halve 84 three times to 11."""
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3, True, network="impala")
    convs = [m for m in agent.network.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 15
    assert [c.out_channels for c in convs] == [16] * 5 + [32] * 10
    blocks = [m for m in agent.network if isinstance(m, pac.ResidualBlock)]
    assert len(blocks) == 6
    [linear] = [m for m in agent.network if isinstance(m, nn.Linear)]
    assert (linear.in_features, linear.out_features) == (32 * 11 * 11, 512)
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    assert action.shape == (5, 3) and logprob.shape == value.shape == (5,)
    # a residual block adds its branch to its input: with the branch's last convolution zeroed,
    # the block is the identity
    block = blocks[0]
    x = torch.randn(2, 16, 42, 42)
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_a_saved_impala_agent_loads_as_an_impala_agent(tmp_path):
    """A checkpoint names its trunk, so loading builds the same one and computes the same
    features."""
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3, True, network="impala")
    path = str(tmp_path / "agent.pt")
    args = pac.Args(continuous=True, network="impala")
    pac.save_checkpoint(path, pac.make_checkpoint(agent, args, 0))
    loaded, _ = pac.load_checkpoint(path)
    assert sum(isinstance(m, pac.ResidualBlock) for m in loaded.network) == 6
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.equal(loaded.features(obs), agent.features(obs))
    # a checkpoint from before --network (no "network" in its config) builds a Nature agent
    config = dict(pac.Agent((4, 84, 84), 3, True).config)
    del config["network"]
    assert pac.Agent(**config).config["network"] == "nature"


def test_a_separate_critic_shares_no_weights_with_the_policy(tmp_path):
    """--separate-critic: the value's gradient reaches only its own trunk and head, the policy's
    only the policy's; a saved agent loads with its two trunks and the same outputs."""
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3, True, separate_critic=True)
    obs = torch.randint(0, 256, (6, 4, 84, 84), dtype=torch.uint8)
    _, logprob, _, value = agent.get_action_and_value(obs)
    policy_params = set(agent.network.parameters()) | set(agent.actor.parameters())
    critic_params = set(agent.critic_network.parameters()) | set(agent.critic.parameters())
    assert not policy_params & critic_params
    assert set(agent.parameters()) == policy_params | critic_params
    for loss, reached, untouched in ((value.square().sum(), critic_params, policy_params),
                                     (logprob.sum(), policy_params, critic_params)):
        agent.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        assert all(p.grad is None for p in untouched)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in reached)
    torch.testing.assert_close(agent.get_value(obs), value)
    path = str(tmp_path / "agent.pt")
    pac.save_checkpoint(path, pac.make_checkpoint(agent, pac.Args(continuous=True,
                                                                  separate_critic=True), 0))
    loaded, _ = pac.load_checkpoint(path)
    assert loaded.critic_network is not None
    with torch.inference_mode():
        assert torch.equal(loaded.get_value(obs), agent.get_value(obs))
    # the default shares one trunk; the policy's trunk is built first either way
    torch.manual_seed(0)
    shared = pac.Agent((4, 84, 84), 3, True)
    assert shared.critic_network is None
    torch.testing.assert_close(shared.network[0].weight, agent.network[0].weight)


def test_smallest_frames_still_give_the_cnn_a_pixel():
    agent = pac.Agent((4, SIZE, SIZE), 2, False)
    [linear] = [m for m in agent.network if isinstance(m, nn.Linear)]
    assert linear.in_features == 64


# --- the Beta policy ------------------------------------------------------------------------------

def beta_agent(alpha, beta):
    """An agent whose policy is Beta(alpha[i], beta[i]) in dimension i whatever the frame: a zero
    actor weight and the bias that softplus + 1 maps to alpha and beta."""
    agent = pac.Agent((1, SIZE, SIZE), len(alpha), True)
    inverse = lambda y: math.log(math.expm1(y - 1))  # softplus^-1(y - 1)
    with torch.no_grad():
        agent.actor.weight.zero_()
        agent.actor.bias.copy_(
            torch.tensor([inverse(a) for a in alpha] + [inverse(b) for b in beta])
        )
    return agent


def log_beta_pdf(x, a, b):
    return (
        (a - 1) * math.log(x)
        + (b - 1) * math.log(1 - x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )


def beta_entropy(a, b):
    digamma = lambda z: torch.special.digamma(torch.tensor(z, dtype=torch.float64)).item()
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return log_b - (a - 1) * digamma(a) - (b - 1) * digamma(b) + (a + b - 2) * digamma(a + b)


def test_beta_log_prob_and_entropy_match_the_closed_forms():
    alpha, beta = [1.5, 4.0, 2.0], [3.0, 1.2, 2.0]
    agent = beta_agent(alpha, beta)
    obs = torch.zeros(4, 1, SIZE, SIZE, dtype=torch.uint8)
    actions = torch.tensor([[0.1, 0.9, 0.5], [0.5, 0.5, 0.5], [0.01, 0.99, 0.3], [0.7, 0.2, 0.999]])
    with torch.no_grad():
        _, logprob, entropy, _ = agent.get_action_and_value(obs, actions)
    for row, x in enumerate(actions.tolist()):
        expected = sum(log_beta_pdf(xi, a, b) for xi, a, b in zip(x, alpha, beta))
        assert logprob[row].item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    expected_entropy = sum(beta_entropy(a, b) for a, b in zip(alpha, beta))
    assert entropy[0].item() == pytest.approx(expected_entropy, rel=1e-4, abs=1e-5)
    # Beta(1, 1) is uniform on [0, 1]: log-density 0 and entropy 0; alpha, beta > 1 stay below it
    assert beta_entropy(1.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert expected_entropy < 0


def test_beta_samples_stay_inside_the_bounds_and_greedy_is_the_mean():
    alpha, beta = [1.05, 30.0, 2.0], [30.0, 1.05, 2.0]  # mass piled against each bound
    agent = beta_agent(alpha, beta)
    obs = torch.zeros(8000, 1, SIZE, SIZE, dtype=torch.uint8)
    torch.manual_seed(0)
    with torch.no_grad():
        sample, logprob, _, _ = agent.get_action_and_value(obs)
        greedy, _, _, _ = agent.get_action_and_value(obs[:3], greedy=True)
    assert torch.isfinite(logprob).all()
    assert (sample > 0).all() and (sample < 1).all()
    mean = torch.tensor([a / (a + b) for a, b in zip(alpha, beta)])
    torch.testing.assert_close(sample.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(greedy, mean.expand(3, 3))
    # mapped onto CarRacing's (steer, gas, brake) bounds by the env's RescaleAction: inside
    # them, nothing clipped
    env = pac.make_env(pac.Args(continuous=True), training=False)()
    assert env.action_space == gym.spaces.Box(0, 1, (3,), np.float32)
    rescale = env
    while not isinstance(rescale, gym.wrappers.RescaleAction):
        rescale = rescale.env
    space = rescale.env.action_space  # CarRacing's own
    env_actions = np.stack([rescale.action(a) for a in sample.numpy()])
    env.close()
    assert env_actions.dtype == space.dtype and all(space.contains(a) for a in env_actions[:2000])
    np.testing.assert_allclose(env_actions[:, 0], 2 * sample[:, 0].numpy() - 1, atol=1e-6)
    assert (
        env_actions[:, 0].min() < -0.99 and env_actions[:, 1].max() > 0.99
    )  # the bounds are reachable


def beta_parameters(bias):
    """alpha and beta per dimension from the actor's bias, by the closed form 1 + log(1 + e^x)."""
    alpha, beta = (1 + np.log1p(np.exp(bias.detach().double().numpy()))).reshape(2, -1)
    return alpha, beta


def test_init_action_mean_starts_the_beta_policy_there():
    """--init-action-mean 0 0.5 0.05 on CarRacing's (steer, gas, brake): straight, half gas, and
    the brake near released, instead of half gas and half brake at once. The smaller of alpha
    and beta stays at the default start's 1 + log 2."""
    args = pac.Args(continuous=True, init_action_mean=(0.0, 0.5, 0.05))
    space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))
    start = pac.beta_start_mean(args, space)
    np.testing.assert_allclose(start, [0.5, 0.5, 0.05])
    agent = pac.Agent((4, 84, 84), 3, True, start)
    alpha, beta = beta_parameters(agent.actor.bias)
    np.testing.assert_allclose(alpha / (alpha + beta), [0.5, 0.5, 0.05], rtol=1e-6)
    np.testing.assert_allclose(np.minimum(alpha, beta), 1 + math.log(2), rtol=1e-6)
    # on any frame the mean is near the start (the actor's 0.01 gain), exactly on a black one
    # (every bias before the actor is 0, so the features are 0)
    frames = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    black = torch.zeros(1, 4, 84, 84, dtype=torch.uint8)
    with torch.no_grad():
        greedy = agent.get_action_and_value(frames, greedy=True)[0]
        exact = agent.get_action_and_value(black, greedy=True)[0]
    torch.testing.assert_close(exact[0], torch.tensor([0.5, 0.5, 0.05]))
    assert (greedy - torch.tensor([0.5, 0.5, 0.05])).abs().max() < 0.02
    # without the flag: mid-range, alpha = beta = 1 + log 2 (a zero bias)
    assert pac.beta_start_mean(pac.Args(continuous=True), space) is None
    alpha, beta = beta_parameters(pac.Agent((4, 84, 84), 3, True).actor.bias)
    np.testing.assert_allclose(np.concatenate([alpha, beta]), 1 + math.log(2), rtol=1e-6)


def test_training_starts_from_init_action_mean(tmp_path, monkeypatch):
    """train() builds its agent from --init-action-mean, in the env's units: 0.5 on [-1, 1] is
    0.75 of the range."""
    made = []

    class Recorded(pac.Agent):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.actor.bias.detach().clone())

    monkeypatch.setattr(pac, "Agent", Recorded)
    pac.train(pac.Args(env_id="tests/GlimpseContinuous-v0", run_dir=str(tmp_path), frame_size=SIZE,
                       action_repeat=1, negative_reward_cutoff=0, async_envs=False, num_envs=2,
                       num_steps=8, num_minibatches=2, total_timesteps=16, eval_episodes=1,
                       init_action_mean=(0.5,)))
    alpha, beta = beta_parameters(made[0])
    np.testing.assert_allclose(alpha / (alpha + beta), [0.75], rtol=1e-6)


def beta_moments(dist):
    """Mean and std of each Beta by the textbook closed forms, in float64 numpy."""
    alpha, beta = dist.concentration1.double().numpy(), dist.concentration0.double().numpy()
    total = alpha + beta
    return alpha / total, np.sqrt(alpha * beta / (total ** 2 * (total + 1)))


def test_the_std_cap_narrows_only_the_wider_betas_and_keeps_every_mean(tmp_path):
    """--final-action-std: a Beta wider than the cap is narrowed to it, its mean unchanged; a
    narrower one is left as it is; and the cap comes back with a saved agent."""
    torch.manual_seed(0)
    agent = pac.Agent((4, 84, 84), 3, True)
    torch.nn.init.normal_(agent.actor.weight)
    hidden = torch.randn(64, 512) * 0.5  # actor outputs up to tens of units either side of 0
    with torch.no_grad():
        free = agent.beta(hidden)
        agent.cap_action_std(0.1)
        capped = agent.beta(hidden)
    free_mean, free_std = beta_moments(free)
    capped_mean, capped_std = beta_moments(capped)
    assert (free_std > 0.1).mean() > 0.2 and (free_std < 0.1).mean() > 0.2
    np.testing.assert_allclose(capped_mean, free_mean, rtol=1e-5)
    np.testing.assert_allclose(capped_std, np.minimum(free_std, 0.1), rtol=1e-4)
    narrow = free_std < 0.1
    assert torch.equal(capped.concentration1[narrow], free.concentration1[narrow])
    # the greedy action is the mean: the cap leaves it where it was
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        greedy = agent.get_action_and_value(obs, greedy=True)[0]
        agent.cap_action_std(None)
        torch.testing.assert_close(agent.get_action_and_value(obs, greedy=True)[0], greedy)
        agent.cap_action_std(0.1)
    # one cap per action: each Beta narrowed to its own dimension's, 0.2887 (the uniform's std)
    # narrowing none
    caps = [0.1, 0.2887, 0.05]
    with torch.no_grad():
        agent.cap_action_std(caps)
        per_action = agent.beta(hidden)
    per_action_mean, per_action_std = beta_moments(per_action)
    assert (free_std[:, 2] > 0.05).mean() > 0.2
    np.testing.assert_allclose(per_action_mean, free_mean, rtol=1e-5)
    np.testing.assert_allclose(per_action_std, np.minimum(free_std, caps), rtol=1e-4)
    path = str(tmp_path / "agent.pt")
    pac.save_checkpoint(path, pac.make_checkpoint(agent, pac.Args(continuous=True), 0))
    loaded, _ = pac.load_checkpoint(path)
    assert loaded.config["std_cap"] == caps


def test_final_action_std_gives_one_cap_per_action():
    """One value serves every action; one per action is taken as it is; Atari's discrete actions
    have no Beta to cap (ALE prints a banner, so this is not a test_bad_input line)."""
    box = gym.spaces.Box(-1.0, 1.0, (3,))
    caps = [pac.beta_final_std(pac.Args(continuous=True, final_action_std=std), box)
            for std in [(0.1,), (0.1, 0.2887, 0.05), 0.1]]  # 0.1: a run from before the tuple
    assert caps == [[0.1] * 3, [0.1, 0.2887, 0.05], [0.1] * 3]
    with pytest.raises(pac.ConfigError, match="ALE/Breakout-v5 has discrete actions"):
        pac.beta_final_std(pac.Args(env_id="ALE/Breakout-v5", continuous=True,
                                    final_action_std=(0.1,)), gym.spaces.Discrete(4))


def test_training_ends_at_final_action_std(tmp_path):
    """The cap moves on its line each iteration, before the rollout, and the saved agent ends on
    the flag's value: every Beta of the trained policy is at most that wide."""
    summary = pac.train(pac.Args(env_id="tests/GlimpseContinuous-v0", run_dir=str(tmp_path),
                                 frame_size=SIZE, action_repeat=1, negative_reward_cutoff=0,
                                 async_envs=False, num_envs=2, num_steps=8, num_minibatches=2,
                                 total_timesteps=48, eval_episodes=1, continuous=True,
                                 final_action_std=(0.05,)))
    agent, _ = pac.load_checkpoint(summary["checkpoint"])
    assert agent.config["std_cap"] == pytest.approx([0.05], rel=1e-12)
    obs = torch.randint(0, 256, (16, *agent.config["obs_shape"]), dtype=torch.uint8)
    with torch.no_grad():
        _, std = beta_moments(agent.beta(agent.features(obs)))
    assert std.max() <= 0.05 * (1 + 1e-4)


# --- end to end -----------------------------------------------------------------------------------

@pytest.mark.parametrize("async_envs,envs_made", [(True, 2), (False, 5)])
def test_evaluation_plays_every_episode_asked_for(monkeypatch, async_envs, envs_made):
    """5 episodes with num_envs 2: async, on 2 env processes with a quota of 3 and 2 episodes,
    fixed in advance; in this process, one env per episode. All of them whole (FrameCounter's
    episodes are 7 frames of -0.1). The evaluation is the script's shared `evaluate`."""
    made = []
    make = pac.make_vector_env
    monkeypatch.setattr(pac, "make_vector_env",
                        lambda args, n, *a, **k: made.append(n) or make(args, n, *a, **k))
    args = frames_args(num_envs=2, frame_stack=2, async_envs=async_envs)
    agent = pac.Agent((2, SIZE, SIZE), 2, False)
    returns = pac.evaluate(agent, args, 5, True, 100_001, CPU)
    assert made == [envs_made] and returns.shape == (5,)
    np.testing.assert_allclose(returns, -0.7, rtol=1e-6)


def test_real_carracing_async_continuous_with_video(tmp_path):
    """The real env on async workers (the default), Beta actions, unclipped returns, video."""
    args = pac.Args(
        env_id="tests/CarRacingShort-v3",
        run_dir=str(tmp_path),
        num_envs=2,
        num_steps=8,
        continuous=True,
        num_minibatches=2,
        total_timesteps=32,
        eval_episodes=1,
        capture_video=True,
        torch_threads=1,
    )
    assert args.async_envs  # the default
    summary = pac.train(args)
    config = torch.load(summary["checkpoint"], weights_only=True)["agent"]
    assert config == {"obs_shape": [4, 84, 84], "n_actions": 3, "continuous": True,
                      "std_cap": None, "network": "nature", "separate_critic": False}
    # a 48-frame episode: at most -0.1 a frame lost, at most the whole track's 1000 gained
    assert len(summary["episodes"]) >= 2
    for _, ret, length in summary["episodes"]:
        assert length == 12 and -4.8 - 1e-6 <= ret <= 1000
    step = summary["global_step"]
    for video in ("train-episode-0.mp4", f"eval-greedy-step-{step}-episode-0.mp4"):
        assert os.path.getsize(os.path.join(summary["run_dir"], video)) > 1000


def test_updates_on_a_fixed_carracing_rollout_fit_the_value_and_raise_the_surrogate():
    """Learning check on real (discrete) CarRacing frames: repeated updates on one fixed rollout
    lower the value loss and raise the likelihood of the actions with positive advantage."""
    args = pac.Args(
        env_id="tests/CarRacingShort-v3",
        continuous=False,
        num_envs=2,
        num_steps=16,
        num_minibatches=2,
        update_epochs=4,
        learning_rate=1e-3,
        ent_coef=0.0,
        clip_vloss=False,
    )
    envs = pac.EnvGroups(dataclasses.replace(args, async_envs=False), args.num_envs)
    assert envs.single_action_space == gym.spaces.Discrete(5)
    obs, _ = envs.reset(seed=0)
    torch.manual_seed(0)
    agent = pac.Agent(envs.single_observation_space.shape, 5, False)
    rollout = pac.Rollout.empty(args.num_steps, args.num_envs, envs.single_observation_space,
                                envs.single_action_space)
    pac.collect_rollout(agent, envs, obs, rollout, None, CPU)
    envs.close()
    adv, ret = pac.compute_gae(
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminations,
        rollout.truncations,
        args.gamma,
        args.gae_lambda,
    )

    def measure():
        obs = torch.from_numpy(rollout.obs.reshape(-1, *rollout.obs.shape[2:]))
        with torch.no_grad():
            _, logprob, _, value = agent.get_action_and_value(
                obs, torch.from_numpy(rollout.actions.ravel())
            )
        v_loss = 0.5 * ((value.numpy() - ret.ravel()) ** 2).mean()
        return v_loss, (logprob.numpy() * np.sign(adv.ravel())).sum()

    v_before, surrogate_before = measure()
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    for _ in range(3):
        pac.update(agent, optimizer, rollout, adv, ret, args, 1.0, args.ent_coef, CPU)
    v_after, surrogate_after = measure()
    assert v_after < 0.5 * v_before
    assert surrogate_after > surrogate_before


@pytest.mark.parametrize(
    "env_id,random_return", [("tests/Glimpse-v0", 4.0), ("tests/GlimpseContinuous-v0", 3.0)]
)
def test_learns_to_look(tmp_path, env_id, random_return):
    """The return improves: on Glimpse the policy must read the frame to act well. Random play
    scores 4 (discrete) or 3 (continuous) of a perfect 8; 12 updates of 128 steps reach 8 and
    about 7.1 at seed 1."""
    args = pac.Args(
        env_id=env_id,
        run_dir=str(tmp_path),
        num_envs=4,
        num_steps=32,
        num_minibatches=4,
        total_timesteps=4 * 32 * 12,
        learning_rate=1e-3,
        eval_episodes=8,
        frame_size=SIZE,
        frame_stack=1,
        action_repeat=1,
        async_envs=False,
        torch_threads=1,
    )
    summary = pac.train(args)
    first = np.mean([ret for _, ret, _ in summary["episodes"][:8]])
    assert first < random_return + 1
    assert summary["eval_greedy_mean"] > random_return + 3


# --- the command line -----------------------------------------------------------------------------

def run_cli(*argv, cwd, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "ppo_atari_carracing.py"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_atari_without_ale_py_names_the_install_command(tmp_path):
    # an ale_py that fails to import stands in for a machine without it, whether or not this one
    # has it
    (tmp_path / "ale_py.py").write_text("raise ImportError('no ale_py here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = run_cli("--env-id", "ALE/Breakout-v5", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "ppo_atari_carracing.py: error: --env-id: Atari games need the Arcade Learning "
        "Environment: pip install ale-py"
    ]


# --- Atari (runs where ale-py is installed: pip install ale-py; its wheel ships the ROMs) ---------

def test_atari_recipe_on_breakout(tmp_path):
    pytest.importorskip("ale_py")
    env = pac.make_env(pac.Args(env_id="ALE/Breakout-v5"))()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    lives_lost, steps, steps_this_life = 0, 0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        steps, steps_this_life = steps + 1, steps_this_life + 1
        assert reward in (-1.0, 0.0, 1.0)  # clipped for the learner
        if terminated or truncated:
            if "episode" in info:  # the game is over
                break
            lives_lost += 1  # a lost life ends the learner's episode, but not the game
            env.reset()
            steps_this_life = 0
    assert lives_lost == 4  # Breakout has 5 lives
    # the game's statistics span all five lives (plus the no-op and FIRE steps of each restart)
    assert info["episode"]["l"] >= steps > steps_this_life
    env.close()
    summary = pac.train(
        pac.Args(
            env_id="ALE/Breakout-v5",
            run_dir=str(tmp_path),
            num_envs=2,
            num_steps=16,
            num_minibatches=2,
            total_timesteps=64,
            eval_episodes=1,
            async_envs=False,
            torch_threads=1,
        )
    )
    assert summary["eval_greedy_mean"] >= 0 and summary["global_step"] == 64
