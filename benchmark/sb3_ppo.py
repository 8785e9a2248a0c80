"""Stable-Baselines3's PPO with ppo.py's CartPole recipe, for the side-by-side comparison of
`benchmark.sh --compare-sb3`: the same envs, steps, minibatches, epochs, annealed learning rate,
clips and coefficients, the same 64-64 tanh actor and critic, one torch thread. Writes a
summary.json shaped like the scripts' own, so benchmark/report.py puts it in the table.

    python benchmark/sb3_ppo.py --env-id CartPole-v1 --seed 1 --total-timesteps 500000 \
        --run-dir results/runs/sb3 --eval-episodes 100

Needs `pip install stable-baselines3` (benchmark.sh installs the version it compares against).
"""
import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy


class EpisodeLog(BaseCallback):
    """(step, return, length) of every training episode, as the scripts record them."""

    def __init__(self):
        super().__init__()
        self.episodes = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.episodes.append((self.num_timesteps, float(info["episode"]["r"]),
                                      int(info["episode"]["l"])))
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--run-dir", default="runs")
    parser.add_argument("--eval-episodes", type=int, default=100)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(1)

    env = make_vec_env(args.env_id, n_envs=4, seed=args.seed)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=4,
                learning_rate=lambda remaining: 2.5e-4 * remaining, gamma=0.99, gae_lambda=0.95,
                clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                seed=args.seed, device="cpu",
                policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]),
                                   activation_fn=torch.nn.Tanh))
    log = EpisodeLog()
    start = time.time()
    model.learn(args.total_timesteps, callback=log)
    sps = model.num_timesteps / (time.time() - start)

    threshold = gym.spec(args.env_id).reward_threshold
    returns_so_far = [r for _, r, _ in log.episodes]
    reached = next((step for i, (step, _, _) in enumerate(log.episodes)
                    if i >= 19 and np.mean(returns_so_far[i - 19:i + 1]) >= threshold), None)
    eval_env = make_vec_env(args.env_id, n_envs=1, seed=args.seed + 100_000)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes,
                                 deterministic=True, return_episode_rewards=True)
    run = os.path.join(args.run_dir, f"sb3__{args.seed}")
    os.makedirs(run, exist_ok=True)
    summary = {
        "env_id": f"{args.env_id} [SB3 PPO]",
        "seed": args.seed,
        "global_step": int(model.num_timesteps),
        "sps": sps,
        "steps_to_threshold": reached,
        "reward_threshold": threshold,
        "episodes": log.episodes,
        "eval_greedy_mean": float(np.mean(returns)),
        "eval_greedy_std": float(np.std(returns)),
    }
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(summary, f)
    print(f"SB3 {args.env_id}: {model.num_timesteps} steps at {sps:.0f} SPS; "
          f"greedy eval {np.mean(returns):.2f}")


if __name__ == "__main__":
    main()
