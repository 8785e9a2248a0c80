"""The PPO math of every script, each function against an independent reference: brute-force
sums, hand-computed values, closed forms. Nothing here calls the code under test a second way."""
import importlib
import math

import numpy as np
import pytest
import torch


# --- GAE --------------------------------------------------------------------------------------

def random_rollout(rng, T=9, N=4):
    """Rewards and values with terminations and truncations in the middle and at the last step."""
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    next_values = rng.normal(size=(T, N)).astype(np.float32)
    terminations = np.zeros((T, N), np.float32)
    truncations = np.zeros((T, N), np.float32)
    terminations[2, 0] = terminations[T - 1, 1] = terminations[5, 3] = 1
    truncations[4, 0] = truncations[T - 1, 2] = truncations[1, 3] = 1
    terminations[6, 2] = truncations[6, 2] = 1  # gymnasium can report both at once
    return rewards, values, next_values, terminations, truncations


def episode_end(terminations, truncations, t, n):
    """Last step index of the episode segment that contains step t of env n, within the rollout."""
    T = len(terminations)
    for k in range(t, T):
        if terminations[k, n] or truncations[k, n]:
            return k
    return T - 1


def brute_force_gae(rewards, values, next_values, terminations, truncations, gamma, lam):
    T, N = rewards.shape
    delta = rewards + gamma * next_values * (1 - terminations) - values
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            end = episode_end(terminations, truncations, t, n)
            adv[t, n] = sum((gamma * lam) ** (k - t) * delta[k, n] for k in range(t, end + 1))
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_brute_force_sum_of_td_errors(script, gamma, lam):
    rng = np.random.default_rng(0)
    for _ in range(5):
        rollout = random_rollout(rng)
        adv, ret = script.compute_gae(*rollout, gamma, lam)
        expected = brute_force_gae(*rollout, gamma, lam)
        np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret, expected + rollout[1], rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_is_monte_carlo_return_minus_value(script):
    rng = np.random.default_rng(1)
    rewards, values, next_values, terminations, truncations = random_rollout(rng)
    # inside an episode the next value is the value of the next stored observation, as in a real
    # rollout; only then do the TD errors telescope into a Monte-Carlo return
    ended = np.maximum(terminations, truncations).astype(bool)
    next_values[:-1] = np.where(ended[:-1], next_values[:-1], values[1:])
    gamma = 0.97
    adv, _ = script.compute_gae(rewards, values, next_values, terminations, truncations, gamma, 1.0)
    T, N = rewards.shape
    for n in range(N):
        for t in range(T):
            end = episode_end(terminations, truncations, t, n)
            mc = sum(gamma ** (k - t) * rewards[k, n] for k in range(t, end + 1))
            # a truncated episode, or the rollout's end, is bootstrapped; a terminated one is not
            if not terminations[end, n]:
                mc += gamma ** (end - t + 1) * next_values[end, n]
            assert adv[t, n] == pytest.approx(mc - values[t, n], rel=1e-5, abs=1e-5)


def test_gae_lambda_zero_is_one_step_td_error(script):
    rng = np.random.default_rng(2)
    rewards, values, next_values, terminations, truncations = random_rollout(rng)
    adv, _ = script.compute_gae(rewards, values, next_values, terminations, truncations, 0.9, 0.0)
    for t in range(rewards.shape[0]):
        for n in range(rewards.shape[1]):
            bootstrap = 0.0 if terminations[t, n] else 0.9 * next_values[t, n]
            assert adv[t, n] == pytest.approx(
                rewards[t, n] + bootstrap - values[t, n], rel=1e-5, abs=1e-6
            )


# --- policy loss ------------------------------------------------------------------------------

def test_policy_loss_hand_computed(script):
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.5, 1.1])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0])
    old = torch.zeros(5)
    # per sample max(-A r, -A clip(r, 0.8, 1.2)): -1.2, -0.5, 0.8, 1.5, -2.2
    expected = (-1.2 - 0.5 + 0.8 + 1.5 - 2.2) / 5
    loss = script.policy_loss(ratio.log(), old, adv, 0.2)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # without the clip: the plain surrogate -A r
    assert script.policy_loss(ratio.log(), old, adv, None).item() == pytest.approx(
        (-1.5 - 0.5 + 0.5 + 1.5 - 2.2) / 5, abs=1e-6
    )


def test_policy_gradient_is_zero_exactly_where_the_clip_is_active(script):
    eps = 0.2
    ratio = torch.tensor([1.3, 1.1, 0.7, 0.9, 1.3, 0.7, 1.1, 0.9])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0])
    clip_active = torch.tensor([True, False, True, False, False, False, False, False])
    new_logprob = ratio.log().requires_grad_()
    script.policy_loss(new_logprob, torch.zeros(8), adv, eps).backward()
    grad = new_logprob.grad
    assert torch.all(grad[clip_active] == 0)
    assert torch.all(grad[~clip_active] != 0)
    # where it is not clipped the gradient of mean(-A r) w.r.t. log r is -A r / n
    np.testing.assert_allclose(grad[~clip_active], (-adv * ratio / 8)[~clip_active], rtol=1e-6)


# --- value loss, KL ---------------------------------------------------------------------------

def test_value_loss_unclipped_and_clipped(script):
    new = torch.tensor([1.0, 2.0, 0.0])
    old = torch.tensor([0.5, 2.5, 0.0])
    ret = torch.tensor([2.0, 1.0, 1.0])
    assert script.value_loss(new, old, ret, None).item() == pytest.approx(0.5 * (1 + 1 + 1) / 3)
    # clipped predictions: 0.7, 2.3, 0.0 -> squared errors 1.69, 1.69, 1; max with unclipped 1, 1, 1
    assert script.value_loss(new, old, ret, 0.2).item() == pytest.approx(
        0.5 * (1.69 + 1.69 + 1) / 3
    )


def test_kl_estimators_on_known_categoricals(script):
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact = float((p * (p / q).log()).sum())
    generator = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 400_000, replacement=True, generator=generator)
    logratio = q.log()[samples] - p.log()[samples]  # log(pi_new / pi_old) at actions from pi_old
    old_kl, kl = script.approx_kl(logratio)
    assert old_kl.item() == pytest.approx(exact, rel=0.03)
    assert kl.item() == pytest.approx(exact, rel=0.03)
    # the (r - 1) - log r estimator is non-negative sample by sample; the naive one is not
    _, per_sample = script.approx_kl(logratio[:1])
    assert per_sample.item() >= 0
    assert script.approx_kl(torch.zeros(10))[1].item() == 0.0


@pytest.mark.parametrize("anneal_lr, anneal_ent", [(False, False), (True, False), (True, True)])
def test_schedules_decay_linearly_towards_zero_after_the_last_iteration(script, anneal_lr,
                                                                        anneal_ent):
    args = script.Args(total_timesteps=4 * script.Args().batch_size, learning_rate=1e-3,
                       ent_coef=0.02, anneal_lr=anneal_lr, anneal_ent=anneal_ent)
    assert args.num_iterations == 4
    for iteration, left in zip((1, 2, 3, 4), (1.0, 0.75, 0.5, 0.25)):
        lr, ent_coef = script.schedules(args, iteration)
        assert lr == pytest.approx(1e-3 * (left if anneal_lr else 1.0), rel=1e-12)
        assert ent_coef == pytest.approx(0.02 * (left if anneal_ent else 1.0), rel=1e-12)


@pytest.mark.parametrize("name", ["ppo_continuous", "ppo_atari_carracing"])
def test_the_std_cap_falls_on_a_line_from_the_initial_std_to_the_final_one(name):
    script = importlib.import_module(name)  # the two scripts with --final-action-std
    caps = [script.action_std_cap(i, 5, 1.0, 0.2) for i in range(1, 6)]
    np.testing.assert_allclose(caps, [1.0, 0.8, 0.6, 0.4, 0.2])
    assert script.action_std_cap(1, 1, 1.0, 0.2) == 1.0  # a one-iteration run: no division by 0


def test_adaptive_kl_beta_rule(script):
    assert script.adapt_kl_beta(1.0, 0.02, 0.01) == 2.0     # above 1.5 x target: double
    assert script.adapt_kl_beta(1.0, 0.005, 0.01) == 0.5    # below target / 1.5: halve
    assert script.adapt_kl_beta(1.0, 0.01, 0.01) == 1.0     # in between: keep
    assert script.adapt_kl_beta(1.0, 0.0149, 0.01) == 1.0
    assert script.adapt_kl_beta(1.0, 0.0067, 0.01) == 1.0


def test_normalize_advantages_and_explained_variance(script):
    adv = torch.tensor([1.0, 2.0, 3.0, 10.0])
    normed = script.normalize_advantages(adv)
    assert normed.mean().item() == pytest.approx(0, abs=1e-6)
    assert normed.std().item() == pytest.approx(1, abs=1e-4)
    returns = np.array([1.0, 2.0, 3.0, 4.0])
    assert script.explained_variance(returns, returns) == pytest.approx(1.0)
    assert script.explained_variance(np.full(4, returns.mean()), returns) == pytest.approx(0.0)
    assert script.explained_variance(-returns, returns) < 0


# --- discrete policy (ppo.py) -------------------------------------------------------------------

def test_categorical_entropy_closed_form_and_sampling():
    import ppo
    logits = torch.tensor([[0.0, 0.0], [2.0, -1.0], [10.0, -10.0]])
    p = torch.softmax(logits, -1)
    expected = -(p * p.log()).sum(-1)
    np.testing.assert_allclose(
        ppo.categorical_entropy(torch.log_softmax(logits, -1)), expected, rtol=1e-5
    )
    assert ppo.categorical_entropy(
        torch.log_softmax(torch.zeros(1, 4), -1)
    ).item() == pytest.approx(math.log(4))

    # the Gumbel-max sampler draws each action with its probability; greedy takes the argmax
    torch.manual_seed(0)
    agent = ppo.Agent(3, 3)
    obs = torch.randn(1, 3).repeat(60_000, 1)
    with torch.no_grad():
        log_probs = torch.log_softmax(agent.actor(obs[:1]), -1)[0]
        actions, logprob, _, _ = agent.get_action_and_value(obs)
        greedy, _, _, _ = agent.get_action_and_value(obs[:5], greedy=True)
    freq = torch.bincount(actions, minlength=3).float() / len(actions)
    np.testing.assert_allclose(freq, log_probs.exp(), atol=0.01)
    np.testing.assert_allclose(logprob, log_probs[actions], rtol=1e-6)
    assert torch.all(greedy == log_probs.argmax())


# --- running statistics and reward scaling (--norm-reward, and ppo_continuous.py's observations) --

def test_running_mean_std_matches_numpy_over_the_stream_merged_batch_by_batch(script):
    rng = np.random.default_rng(1)
    rms = script.RunningMeanStd((3,))
    seen = []
    for size in (
        1,
        4,
        1,
        17,
        250,
        2,
        1,
    ):  # single observations and batches, merged by the parallel formula
        batch = rng.normal(loc=[0.0, 5.0, -100.0], scale=[1.0, 0.1, 30.0], size=(size, 3))
        rms.update(torch.from_numpy(batch))
        seen.append(batch)
        whole = np.concatenate(seen)
        np.testing.assert_allclose(rms.mean.numpy(), whole.mean(0), rtol=1e-10)
        np.testing.assert_allclose(rms.var.numpy(), whole.var(0), rtol=1e-10)
        assert rms.count.item() == len(whole)


def test_reward_scaler_divides_by_the_running_std_of_the_discounted_return(script):
    rng = np.random.default_rng(2)
    T, N, gamma = 80, 3, 0.9
    rewards = rng.normal(2.0, 3.0, size=(T, N))
    ended = rng.random((T, N)) < 0.1
    scaler = script.RewardScaler(N, gamma)
    discounted, seen = np.zeros(N), []
    for t in range(T):
        discounted = gamma * discounted + rewards[t]
        seen.extend(discounted)
        expected = np.clip(rewards[t] / np.sqrt(np.var(seen) + 1e-8), -10, 10)
        np.testing.assert_allclose(scaler(rewards[t], ended[t]), expected, rtol=1e-9)
        discounted[ended[t]] = 0.0  # a new episode's return starts from scratch
    # one env's first reward: the std of one return is 0, and the clip bounds the result
    assert script.RewardScaler(1, gamma)(np.array([-5.0]), np.array([False]))[0] == -10
