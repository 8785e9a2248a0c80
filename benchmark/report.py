"""The benchmark's table and learning-curve plots, from the runs in an output folder of
benchmark.sh: OUT/runs/<task>/<run>/summary.json (one per seed), OUT/jobs.txt (the command lines
as run), OUT/env_sps.txt (env-only rates). Writes OUT/results.md and OUT/<task>.png.

    python benchmark/report.py results --quick 0 --jobs 2 --eval-episodes 100
"""
import argparse
import glob
import json
import os
import warnings
from collections import defaultdict

import numpy as np


def row_name(env_id: str, task: str) -> str:
    """The table row of a run: its env id, and the variant of a task named ENV:VARIANT."""
    return env_id + (f" [{task.split(':', 1)[1]}]" if ":" in task else "")


def flag(line: str, name: str, default: str) -> str:
    """The value of the last --name on a job line: a recipe's flags come after the common ones."""
    words, value = line.split(), default
    for i, word in enumerate(words[:-1]):
        if word == name:
            value = words[i + 1]
    return value


def load_runs(out: str) -> dict[str, list[dict]]:
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(out, "runs", "*", "*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        # the folder above the run is the task: ENV or ENV:VARIANT
        task = os.path.basename(os.path.dirname(os.path.dirname(path)))
        runs[row_name(summary["env_id"], task)].append(summary)
    return runs


def load_settings(out: str, eval_episodes: str) -> dict[str, tuple[str, str]]:
    """Task row -> (evaluation episodes, torch threads), from the job lines as they were run."""
    settings = {}
    with open(os.path.join(out, "jobs.txt")) as f:
        for line in f:
            task = os.path.basename(flag(line, "--run-dir", ""))
            env_id = flag(line, "--env-id", task) + (" [SB3 PPO]" if "sb3_ppo.py" in line else "")
            settings[row_name(env_id, task)] = (flag(line, "--eval-episodes", eval_episodes),
                                                flag(line, "--torch-threads", "1"))
    return settings


def load_env_rates(out: str) -> dict[str, list[float]]:
    rates = defaultdict(list)
    with open(os.path.join(out, "env_sps.txt")) as f:
        for line in f:
            env_id, sps = line.split()
            rates[env_id].append(float(sps))
    return rates


def curve(summary: dict, grid: np.ndarray) -> np.ndarray:
    """Mean of the last 20 episodic returns at each grid step (step-function interpolation)."""
    steps = np.array([s for s, _, _ in summary["episodes"]])
    returns = np.array([r for _, r, _ in summary["episodes"]])
    values = []
    for g in grid:
        seen = returns[steps <= g]
        values.append(seen[-20:].mean() if len(seen) else np.nan)
    return np.array(values)


def threshold_of(env_id: str, summaries: list[dict]):
    threshold = summaries[0]["reward_threshold"]
    if threshold is None:  # runs made before ppo_atari_carracing.py recorded CarRacing's 900
        import gymnasium as gym
        threshold = gym.spec(env_id.split(" [")[0]).reward_threshold
    return threshold


def plot(out: str, env_id: str, summaries: list[dict], threshold) -> None:
    """Training curves (sampled actions: the mean of the last 20 training episodes) for each seed,
    their mean and their spread over seeds, and the final greedy evaluation at the last step: the
    mean over seeds with the seeds' spread. The two differ: the greedy policy drops the
    exploration noise the training episodes carry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = summaries[0]["global_step"]
    grid = np.linspace(0, steps, 200)
    curves = np.array([curve(s, grid) for s in summaries])
    plt.figure(figsize=(6, 4))
    for c in curves:
        plt.plot(grid, c, color="tab:blue", alpha=0.25, linewidth=0.8)
    some = ~np.isnan(curves).all(axis=0)  # before any seed has finished an episode there is no mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a grid step no seed has reached yet
        low, high = np.nanmin(curves[:, some], axis=0), np.nanmax(curves[:, some], axis=0)
        mean = np.nanmean(curves[:, some], axis=0)
    plt.fill_between(grid[some], low, high, color="tab:blue", alpha=0.15,
                     label=f"training, sampled actions: range over {len(summaries)} seeds")
    plt.plot(grid[some], mean, color="tab:blue", label="training: mean of the last 20 episodes")
    evals = np.array([s["eval_greedy_mean"] for s in summaries])
    spread = [[evals.mean() - evals.min()], [evals.max() - evals.mean()]]
    plt.errorbar([steps], [evals.mean()], yerr=spread, fmt="o", color="tab:red", capsize=4,
                 label=f"final greedy evaluation: mean, range over seeds ({evals.mean():.1f})")
    if threshold is not None:
        plt.axhline(threshold, color="grey", linestyle="--", linewidth=0.8,
                    label=f"threshold {threshold:g}")
    plt.xlabel("environment steps")
    plt.ylabel("episodic return")
    plt.title(env_id)
    plt.legend(fontsize=7, loc="lower right")
    plt.tight_layout()
    name = env_id.replace(" [", "-").rstrip("]").replace(" ", "-")
    plt.savefig(os.path.join(out, f"{name}.png"), dpi=100)
    plt.close()


def table_row(env_id: str, summaries: list[dict], threshold, env_rates: list[float]) -> str:
    evals = np.array([s["eval_greedy_mean"] for s in summaries])
    reached = [s["steps_to_threshold"] for s in summaries if s["steps_to_threshold"] is not None]
    if threshold is None:  # e.g. Pendulum-v1: gymnasium registers no "solved" level
        to_threshold = "no threshold registered"
    elif reached:
        to_threshold = (f"{np.mean(reached):,.0f} (threshold {threshold:g}, "
                        f"{len(reached)}/{len(summaries)} seeds)")
    else:
        to_threshold = f"not reached (threshold {threshold:g})"
    sps = np.mean([s["sps"] for s in summaries])
    env_sps = np.mean(env_rates) if env_rates else float("nan")
    if len(summaries) > 1:
        spread = f"+- {evals.std():.1f}"
    else:  # one seed: the spread over its episodes
        spread = f"(one seed; +- {summaries[0]['eval_greedy_std']:.1f} over its episodes)"
    return (f"| {env_id} | {summaries[0]['global_step']:,} | {len(summaries)} | "
            f"{evals.mean():.1f} {spread} | {evals.min():.1f} | {to_threshold} | {sps:,.0f} | "
            f"{env_sps:,.0f} | {sps / env_sps:.2f} |")


def sb3_comparison(runs: dict[str, list[dict]]) -> str | None:
    if "CartPole-v1" not in runs or "CartPole-v1 [SB3 PPO]" not in runs:
        return None
    ours, sb3 = runs["CartPole-v1"], runs["CartPole-v1 [SB3 PPO]"]

    def reach(summaries):
        r = [s["steps_to_threshold"] for s in summaries if s["steps_to_threshold"] is not None]
        return f"{np.mean(r):,.0f} ({len(r)}/{len(summaries)} seeds)" if r else "never"
    ratio = np.mean([s["sps"] for s in ours]) / np.mean([s["sps"] for s in sb3])
    return (f"\nppo.py / SB3 PPO on CartPole-v1, same recipe, same run: {ratio:.2f}x the steps "
            f"per second; steps to a 20-episode mean of 475: ppo.py {reach(ours)}, "
            f"SB3 {reach(sb3)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="benchmark.sh's output folder")
    parser.add_argument("--quick", default="0", help="1 if the runs were made with --quick")
    parser.add_argument("--jobs", default="1", help="how many runs ran side by side")
    parser.add_argument("--eval-episodes", default="100", help="the common evaluation episodes")
    options = parser.parse_args()
    out, jobs, eval_episodes = options.out, options.jobs, options.eval_episodes

    runs, env_rates = load_runs(out), load_env_rates(out)
    settings = load_settings(out, eval_episodes)
    rows = ["| task | steps | seeds | eval return (greedy), mean +- std over seeds | worst seed | "
            "steps to 20-episode mean >= threshold | training SPS | env-only SPS | "
            "training / env-only |",
            "|---|---|---|---|---|---|---|---|---|"]
    for env_id, summaries in runs.items():
        threshold = threshold_of(env_id, summaries)
        rows.append(table_row(env_id, summaries, threshold, env_rates[env_id.split(" [")[0]]))
        plot(out, env_id, summaries, threshold)
    comparison = sb3_comparison(runs)
    if comparison:
        rows.append(comparison)
    side_by_side = "one run at a time" if jobs == "1" else f"up to {jobs} runs side by side"
    note = (f"\n\n{'quick mode; ' if options.quick == '1' else ''}{side_by_side}, one torch thread "
            f"each; eval: greedy policy, {eval_episodes} episodes per seed on unseen seeds; SPS "
            f"includes the updates.\n")
    # recipes that override the common settings (0 threads: one per core for the update)
    others = [f"{row}: {episodes} evaluation episodes, --torch-threads {threads}"
              for row, (episodes, threads) in settings.items()
              if row in runs and (episodes, threads) != (eval_episodes, "1")]
    if others:
        note += "except " + "; ".join(others) + ".\n"
    text = "\n".join(rows) + note
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
