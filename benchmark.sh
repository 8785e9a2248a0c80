#!/usr/bin/env bash
# Learning and speed benchmark: trains each task over several seeds (in parallel up to the core
# count), measures the env-only stepping rate of the same vector env (the ceiling on training
# SPS), and writes results/results.md (a table) and results/<env>.png (learning curves).
#
#   ./benchmark.sh                      # full: the step counts of the published references, every
#                                       # task but BipedalWalker-v3 (over an hour per seed here)
#   ./benchmark.sh --quick              # a few minutes: short budgets, 2 seeds, one task per script
#   ./benchmark.sh --tasks CartPole-v1,LunarLander-v3 --seeds 5 --jobs 2 --out results
#   ./benchmark.sh --tasks Pendulum-v1 --seeds 4-6 --out more   # seeds 4, 5, 6 (fresh seeds for a
#                                                               # recipe chosen on seeds 1-3)
#   ./benchmark.sh --tasks BipedalWalker-v3      # a long task, only when named
#   ./benchmark.sh --report --out results        # only rebuild the table and plots from the runs
#                                                # (and env-only rates) already in --out
#   ./benchmark.sh --quick --compare-sb3     # also train Stable-Baselines3's PPO with the same
#                                            # CartPole recipe, side by side (pip-installs it)
#
# Speed numbers depend on what else the machine runs: every process here uses one torch thread
# (--torch-threads 1; the count changes floating-point order, hence results at a fixed seed), and
# the env-only ceiling is measured with the same number of processes running side by side.
set -euo pipefail
cd "$(dirname "$0")"

QUICK=0; COMPARE=0; REPORT=0; SEEDS=""; JOBS=$(nproc); OUT=results; TASKS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --seeds) SEEDS="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --tasks) TASKS="$2"; shift ;;
    --compare-sb3) COMPARE=1 ;;
    --report) REPORT=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;  # the header comment, however long
    *) echo "benchmark.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON=${PYTHON:-python}
# Evaluation episodes per seed: Pendulum's return depends mostly on its random start angle, so
# 10 episodes leave about +-30 of noise from the starts alone (one seed-1 policy: -218 over the
# 10 starts of its evaluation seed, -158 over 100); 100 episodes cost seconds on every task here.
EVAL_EPISODES=100

# Per-task recipes: script | env id | steps (full) | steps (quick) | hyper-parameters.
# CartPole and Acrobot use the script defaults (CleanRL's classic-control recipe: 4 envs x 128
# steps, 4 minibatches, 4 epochs, lr 2.5e-4 annealed). LunarLander starts from rl-baselines3-zoo's
# tuned recipe (16 envs, minibatch 64, 4 epochs, gamma 0.999, lambda 0.98, entropy 0.01, lr 3e-4)
# with three changes, each measured here at 1M steps (greedy eval, 10 episodes, seeds 1/2/3):
#   zoo recipe as published (1024-step rollouts, value clip on)           144 / 189 / 222
#   256-step rollouts, no value clip                                       236 / 252 / 222
#   128-step rollouts, no value clip, --norm-reward (this recipe)          260 / 261 / 243
# Shorter rollouts give as many gradient steps on fresher data. With gamma 0.999 the returns run
# into the hundreds: the value clip (+-0.2 per update) stalls the critic, and the critic's
# gradients fill the global gradient-norm clip (0.5) and shrink the policy's; scaling rewards by
# the running std of the discounted return removes both problems.
# ppo_continuous.py (observation and reward normalisation on, its defaults):
# - Pendulum-v1: rl-zoo's recipe (4 envs, minibatch 64, 10 epochs, lr 1e-3, no entropy bonus)
#   without its gSDE exploration, with 256-step rollouts instead of 1024, gamma 0.97 instead of
#   0.9 and no value clip. Chosen at 102,400 steps among a dozen variants (docs/notes/); with 100
#   evaluation episodes, seeds 1/2/3: gamma 0.95 -158 / -249 / -148, gamma 0.97 -176 / -176 / -158,
#   gamma 0.95 with 20 epochs -188 / -178 / -, lr 2e-3 - / -202 / -.
# - LunarLanderContinuous-v3: rl-zoo's recipe as published (16 envs x 1024, minibatch 64, 4 epochs,
#   gamma 0.999, lambda 0.98, entropy 0.01).
# - BipedalWalker-v3: rl-zoo's recipe (32 envs x 2048, minibatch 64, 10 epochs, gamma 0.999,
#   lambda 0.95, clip 0.18) with lr 2.5e-4 annealed (rl-zoo: 3e-4 constant), no value clip, and the
#   std capped by a line from 1 down to 0.3 at the end (left free, it rises again after ~3M steps
#   while the evaluation runs the mean action), 5M steps. Greedy eval over 100 episodes, seeds
#   1/2/3 (docs/benchmark/bipedalwalker.md):
#     lr 2.5e-4 annealed, value clip on                                         289 / 295 / 247
#     lr 2.5e-4 annealed, no value clip                                         291 / 291 / 272
#     rl-zoo exactly: lr 3e-4 constant, no value clip, --vf-coef 1.0            252 / 294 / 274
#     no value clip, --init-action-std 0.5 (half as fast; stopped at 2M)        -
#     no value clip, --ent-coef 0.001                                           298 / -94 / 283
#     no value clip, --final-action-std 0.3 (this recipe)                       296 / 287 / 299
#       (fresh seeds 4/5, not used to choose: 282 / 291; five-seed mean 291)
#   (vf-coef 1.0: SB3's value loss is the plain squared error, ours is halved)
# ppo_atari_carracing.py: its defaults (the Atari recipe of the PPO paper: 8 envs x 128 steps,
#   4 minibatches, 4 epochs, lr 2.5e-4, clip 0.1, entropy 0.01, cut-off after 50 steps without
#   reward), 300k steps = 1.2M frames. CarRacing-v3 uses the 5 discrete actions (the default),
#   CarRacing-v3:beta the continuous ones with the Beta policy; seed 1 of each, greedy eval over
#   20 episodes: discrete 701, Beta 560, so discrete became the default (discrete seed 2: 702).
#   A run uses every core (8 async env workers, an update thread per core: --torch-threads 0),
#   so run it alone (--jobs 1).
#   20 evaluation episodes, not 100: each CarRacing episode is 250 steps of a renderer process.
# A task named ENV:VARIANT is ENV trained with the variant's flags, reported on a row of its own.
RECIPES="
ppo.py|CartPole-v1|500000|100000|
ppo.py|Acrobot-v1|500000|100000|
ppo.py|LunarLander-v3|1000000|200000|--num-envs 16 --num-steps 128 --num-minibatches 32 --update-epochs 4 --gamma 0.999 --gae-lambda 0.98 --ent-coef 0.01 --learning-rate 3e-4 --no-clip-vloss --norm-reward
ppo_continuous.py|Pendulum-v1|102400|51200|--num-envs 4 --num-steps 256 --num-minibatches 16 --update-epochs 10 --gamma 0.97 --gae-lambda 0.95 --learning-rate 1e-3 --no-clip-vloss
ppo_continuous.py|LunarLanderContinuous-v3|1000000|200000|--num-envs 16 --num-steps 1024 --num-minibatches 256 --update-epochs 4 --gamma 0.999 --gae-lambda 0.98 --ent-coef 0.01
ppo_continuous.py|BipedalWalker-v3|5000000|500000|--num-envs 32 --num-steps 2048 --num-minibatches 1024 --update-epochs 10 --gamma 0.999 --gae-lambda 0.95 --learning-rate 2.5e-4 --clip-coef 0.18 --no-clip-vloss --final-action-std 0.3
ppo_atari_carracing.py|CarRacing-v3|300000|8192|--torch-threads 0 --eval-episodes 20
ppo_atari_carracing.py|CarRacing-v3:beta|300000|8192|--torch-threads 0 --eval-episodes 20 --continuous
"
# left out of the default set: about an hour per seed here
LONG_TASKS="BipedalWalker-v3 CarRacing-v3 CarRacing-v3:beta"

if [ -z "$TASKS" ]; then
  if [ "$QUICK" = 1 ]; then TASKS="CartPole-v1,Pendulum-v1"
  else TASKS=$(echo "$RECIPES" | awk -F'|' -v long="$LONG_TASKS" 'NF>1 && index(" " long " ", " " $2 " ") == 0 {printf "%s%s", s, $2; s=","}'); fi
fi
[ -n "$SEEDS" ] || { [ "$QUICK" = 1 ] && SEEDS=2 || SEEDS=3; }
case "$SEEDS" in  # N: seeds 1..N; A-B: seeds A..B
  *[!0-9-]*|-*|*-|*-*-*) echo "benchmark.sh: error: --seeds takes a count N or a range A-B, got '$SEEDS'" >&2; exit 2 ;;
  *-*) SEED_LIST=$(seq "${SEEDS%-*}" "${SEEDS#*-}") ;;
  *) SEED_LIST=$(seq 1 "$SEEDS") ;;
esac
[ -n "$SEED_LIST" ] || { echo "benchmark.sh: error: --seeds $SEEDS names no seed" >&2; exit 2; }

if [ "$REPORT" = 0 ]; then
mkdir -p "$OUT/runs" "$OUT/logs"
: > "$OUT/jobs.txt"
for task in ${TASKS//,/ }; do
  line=$(echo "$RECIPES" | awk -F'|' -v t="$task" '$2==t')
  [ -n "$line" ] || { echo "benchmark.sh: error: no recipe for task $task" >&2; exit 2; }
  IFS='|' read -r script task full quick hparams <<< "$line"
  steps=$([ "$QUICK" = 1 ] && echo "$quick" || echo "$full")
  for seed in $SEED_LIST; do  # the recipe's flags come last: they override the common ones
    echo "$script --env-id ${task%%:*} --seed $seed --total-timesteps $steps --torch-threads 1 --run-dir $OUT/runs/$task --exp-name bench --eval-episodes $EVAL_EPISODES $hparams" >> "$OUT/jobs.txt"
  done
done

if [ "$COMPARE" = 1 ]; then
  # The reference library, trained with ppo.py's CartPole defaults (same envs, steps, minibatches,
  # epochs, annealed lr, clips, coefficients, 64-64 tanh actor and critic), one torch thread.
  $PYTHON -m pip install -q stable-baselines3==2.9.2
  cat > "$OUT/sb3_ppo.py" <<'PY'
import argparse, json, os, time
import numpy as np, torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
import gymnasium as gym
p = argparse.ArgumentParser()
p.add_argument("--env-id"); p.add_argument("--seed", type=int); p.add_argument("--total-timesteps", type=int)
p.add_argument("--run-dir"); p.add_argument("--eval-episodes", type=int)
a, _ = p.parse_known_args()
torch.set_num_threads(1)
episodes = []
class Log(BaseCallback):
    def _on_step(self):
        for info in self.locals["infos"]:
            if "episode" in info:
                episodes.append((self.num_timesteps, float(info["episode"]["r"]), int(info["episode"]["l"])))
        return True
env = make_vec_env(a.env_id, n_envs=4, seed=a.seed)
model = PPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=4, learning_rate=lambda f: 2.5e-4 * f,
            gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5,
            max_grad_norm=0.5, seed=a.seed, device="cpu",
            policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh))
start = time.time(); model.learn(a.total_timesteps, callback=Log()); sps = model.num_timesteps / (time.time() - start)
threshold = gym.spec(a.env_id).reward_threshold
reached = next((s for i, (s, _, _) in enumerate(episodes) if i >= 19 and np.mean([r for _, r, _ in episodes[i - 19:i + 1]]) >= threshold), None)
eval_env = make_vec_env(a.env_id, n_envs=1, seed=a.seed + 100_000)
returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=a.eval_episodes, deterministic=True, return_episode_rewards=True)
run = os.path.join(a.run_dir, f"sb3__{a.seed}"); os.makedirs(run, exist_ok=True)
summary = {"env_id": f"{a.env_id} [SB3 PPO]", "seed": a.seed, "global_step": int(model.num_timesteps), "sps": sps,
           "steps_to_threshold": reached, "reward_threshold": threshold, "episodes": episodes,
           "eval_greedy_mean": float(np.mean(returns)), "eval_greedy_std": float(np.std(returns))}
json.dump(summary, open(os.path.join(run, "summary.json"), "w"))
print(f"SB3 {a.env_id}: {model.num_timesteps} steps at {sps:.0f} SPS; greedy eval {np.mean(returns):.2f}")
PY
  steps=$(echo "$RECIPES" | awk -F'|' -v q="$QUICK" '$2=="CartPole-v1"{print (q==1 ? $4 : $3)}')
  for seed in $SEED_LIST; do  # interleaved with ours, so both see the same load
    sed -i "/CartPole-v1 --seed $seed /a $OUT/sb3_ppo.py --env-id CartPole-v1 --seed $seed --total-timesteps $steps --run-dir $OUT/runs/sb3 --eval-episodes $EVAL_EPISODES" "$OUT/jobs.txt"
  done
fi

echo "benchmark: $(wc -l < "$OUT/jobs.txt") runs, $JOBS at a time; logs in $OUT/logs/"
run_one() {  # one training run; its summary.json lands in its run folder
  local log; log="$OUT/logs/$(echo "$*" | awk '{n=split($1, p, "/"); for (i = 1; i < NF; i++) if ($i == "--run-dir") m=split($(i+1), d, "/");
                                              print p[n] "_" d[m] "_seed" $5}').log"
  $PYTHON $* > "$log" 2>&1 && tail -n 1 "$log" || { echo "FAILED: $* (see $log)"; return 1; }
}
export -f run_one; export OUT PYTHON
xargs -P "$JOBS" -I{} bash -c 'run_one {}' < "$OUT/jobs.txt" || echo "benchmark: some runs failed; the table has the others"

# The ceiling: the same vector env stepped with random actions, $JOBS copies side by side so the
# machine is as loaded as during training.
: > "$OUT/env_sps.txt"
measured=" "
for task in ${TASKS//,/ }; do
  line=$(echo "$RECIPES" | awk -F'|' -v t="$task" '$2==t')
  IFS='|' read -r script env full quick hparams <<< "$line"
  env=${env%%:*}
  case "$measured" in *" $env "*) continue ;; esac  # a variant steps the same env
  measured="$measured$env "
  num_envs=$(echo "$hparams" | awk '{for(i=1;i<NF;i++) if($i=="--num-envs") print $(i+1)}')
  module=${script%.py}
  for j in $(seq 1 "$JOBS"); do
    $PYTHON - "$module" "$env" "${num_envs:-default}" >> "$OUT/env_sps.txt" <<'PY' &
import sys, time, numpy as np, importlib
module, env_id, num_envs = sys.argv[1:]
script = importlib.import_module(module)
num_envs = script.Args().num_envs if num_envs == "default" else int(num_envs)
envs = script.make_vector_env(env_id, num_envs, asynchronous=script.Args().async_envs)
envs.reset(seed=0)
envs.action_space.seed(0)
steps, start = 0, time.time()
while time.time() - start < 10:
    envs.step(envs.action_space.sample())
    steps += num_envs
print(env_id, steps / (time.time() - start))
envs.close()
PY
  done
  wait
done
echo "$QUICK $JOBS $EVAL_EPISODES" > "$OUT/settings.txt"  # how the runs were made, for --report
fi  # --report: only the table and plots below
[ -f "$OUT/settings.txt" ] && read -r QUICK JOBS EVAL_EPISODES < "$OUT/settings.txt"

$PYTHON - "$OUT" "$QUICK" "$JOBS" "$EVAL_EPISODES" <<'PY'
import glob, json, os, sys
from collections import defaultdict
import numpy as np
out, quick, jobs, eval_episodes = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
def row_name(env_id, task):
    """The table row of a run: its env id, and the variant of a task named ENV:VARIANT."""
    return env_id + (f" [{task.split(':', 1)[1]}]" if ":" in task else "")
runs = defaultdict(list)
for path in sorted(glob.glob(os.path.join(out, "runs", "*", "*", "summary.json"))):
    summary = json.load(open(path))
    task = os.path.basename(os.path.dirname(os.path.dirname(path)))  # the run folder: ENV or ENV:VARIANT
    runs[row_name(summary["env_id"], task)].append(summary)
def flag(line, name, default):
    """The value of the last --name on a job line: a recipe's flags come after the common ones."""
    words, value = line.split(), default
    for i, word in enumerate(words[:-1]):
        if word == name:
            value = words[i + 1]
    return value
settings = {}  # task row -> (evaluation episodes, torch threads), from the job lines as run
for line in open(os.path.join(out, "jobs.txt")):
    task = os.path.basename(flag(line, "--run-dir", ""))
    env_id = flag(line, "--env-id", task) + (" [SB3 PPO]" if "sb3_ppo.py" in line else "")
    settings[row_name(env_id, task)] = (flag(line, "--eval-episodes", eval_episodes), flag(line, "--torch-threads", "1"))
ceiling = defaultdict(list)
for line in open(os.path.join(out, "env_sps.txt")):
    env_id, sps = line.split()
    ceiling[env_id].append(float(sps))

def curve(summary, grid):
    """Mean of the last 20 episodic returns at each grid step (step-function interpolation)."""
    steps = np.array([s for s, _, _ in summary["episodes"]])
    returns = np.array([r for _, r, _ in summary["episodes"]])
    values = []
    for g in grid:
        seen = returns[steps <= g]
        values.append(seen[-20:].mean() if len(seen) else np.nan)
    return np.array(values)

rows = ["| task | steps | seeds | eval return (greedy), mean +- std over seeds | worst seed | "
        "steps to 20-episode mean >= threshold | training SPS | env-only SPS | training / env-only |",
        "|---|---|---|---|---|---|---|---|---|"]
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
for env_id, summaries in runs.items():
    evals = np.array([s["eval_greedy_mean"] for s in summaries])
    reached = [s["steps_to_threshold"] for s in summaries if s["steps_to_threshold"] is not None]
    threshold = summaries[0]["reward_threshold"]
    if threshold is None:  # runs made before ppo_atari_carracing.py recorded CarRacing's 900
        import gymnasium as gym
        threshold = gym.spec(env_id.split(" [")[0]).reward_threshold
    if threshold is None:  # e.g. Pendulum-v1: gymnasium registers no "solved" level
        to_threshold = "no threshold registered"
    elif reached:
        to_threshold = f"{np.mean(reached):,.0f} (threshold {threshold:g}, {len(reached)}/{len(summaries)} seeds)"
    else:
        to_threshold = f"not reached (threshold {threshold:g})"
    sps = np.mean([s["sps"] for s in summaries])
    base_env = env_id.split(" [")[0]
    env_sps = np.mean(ceiling[base_env]) if ceiling[base_env] else float("nan")
    steps = summaries[0]["global_step"]
    spread = (f"+- {evals.std():.1f}" if len(summaries) > 1  # one seed: the spread over its episodes
              else f"(one seed; +- {summaries[0]['eval_greedy_std']:.1f} over its episodes)")
    rows.append(f"| {env_id} | {steps:,} | {len(summaries)} | {evals.mean():.1f} {spread} | {evals.min():.1f} | "
                f"{to_threshold} | {sps:,.0f} | {env_sps:,.0f} | {sps / env_sps:.2f} |")
    grid = np.linspace(0, steps, 200)
    curves = np.array([curve(s, grid) for s in summaries])
    plt.figure(figsize=(6, 4))
    for c in curves:
        plt.plot(grid, c, color="tab:blue", alpha=0.25, linewidth=0.8)
    some = ~np.isnan(curves).all(axis=0)  # before any seed has finished an episode there is no mean
    plt.plot(grid[some], np.nanmean(curves[:, some], axis=0), color="tab:blue", label=f"mean of {len(summaries)} seeds")
    if threshold is not None:
        plt.axhline(threshold, color="grey", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    plt.xlabel("environment steps"); plt.ylabel("episodic return (last 20 episodes)")
    plt.title(env_id); plt.legend(); plt.tight_layout()
    plt.savefig(os.path.join(out, f"{env_id.replace(' [', '-').rstrip(']').replace(' ', '-')}.png"), dpi=100); plt.close()
if "CartPole-v1" in runs and "CartPole-v1 [SB3 PPO]" in runs:
    ours, sb3 = runs["CartPole-v1"], runs["CartPole-v1 [SB3 PPO]"]
    def reach(ss):
        r = [s["steps_to_threshold"] for s in ss if s["steps_to_threshold"] is not None]
        return f"{np.mean(r):,.0f} ({len(r)}/{len(ss)} seeds)" if r else "never"
    rows.append(f"\nppo.py / SB3 PPO on CartPole-v1, same recipe, same run: "
                f"{np.mean([s['sps'] for s in ours]) / np.mean([s['sps'] for s in sb3]):.2f}x the steps per second; "
                f"steps to a 20-episode mean of 475: ppo.py {reach(ours)}, SB3 {reach(sb3)}")
table = "\n".join(rows)
side_by_side = "one run at a time" if jobs == "1" else f"up to {jobs} runs side by side"
note = (f"\n\n{'quick mode; ' if quick else ''}{side_by_side}, one torch thread each; eval: greedy policy, "
        f"{eval_episodes} episodes per seed on unseen seeds; SPS includes the updates.\n")
others = [f"{row}: {episodes} evaluation episodes, --torch-threads {threads}"
          for row, (episodes, threads) in settings.items() if row in runs and (episodes, threads) != (eval_episodes, "1")]
if others:  # recipes that override the common settings (0 threads: one per core for the update)
    note += "except " + "; ".join(others) + ".\n"
open(os.path.join(out, "results.md"), "w").write(table + note)
print(table + note)
PY
