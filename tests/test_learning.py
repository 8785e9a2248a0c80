"""ppo.py learns: CartPole-v1 from a fixed seed, with the script's default recipe (CleanRL's
classic-control hyper-parameters: 4 envs x 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4
annealed), on the CPU, with a budget of 200,000 environment steps. Measured here: seeds 1-4 all
evaluate at >= 496 (greedy, 10 episodes) with this budget, so the fixed seed has margin."""
import ppo

BUDGET = 200_000


def test_cartpole_reaches_475(tmp_path):
    summary = ppo.train(
        ppo.Args(seed=1, total_timesteps=BUDGET, run_dir=str(tmp_path), eval_episodes=20)
    )
    assert summary["eval_greedy_mean"] >= 475, summary["eval_greedy_mean"]
