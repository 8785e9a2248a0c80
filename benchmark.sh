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
#   ./benchmark.sh --tasks Hopper-v5 --out mj    # run again after a cut: only the seeds without a
#                                                # finished run in mj/ are trained
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
# run outside the project's virtual environment, every script would fail with a traceback
"$PYTHON" -c "import torch, gymnasium, tyro, matplotlib" 2>/dev/null || {
  echo "benchmark.sh: error: $PYTHON lacks the project's packages; activate its virtual environment" \
       "(. .venv/bin/activate) or pip install -r requirements.txt, or set PYTHON" >&2; exit 2; }
# Evaluation episodes per seed: Pendulum's return depends mostly on its random start angle, so
# 10 episodes leave the start-state noise in the mean (docs/benchmark/recipes.md); 100 episodes
# cost seconds on every task here.
EVAL_EPISODES=100

# Per-task recipes: script | env id | steps (full) | steps (quick) | hyper-parameters. Each one's
# origin and the variants measured before it was chosen: docs/benchmark/recipes.md.
# - CartPole-v1, Acrobot-v1: the script's defaults, CleanRL's classic-control recipe.
# - LunarLander-v3: rl-baselines3-zoo's recipe with shorter rollouts, no value clip and
#   --norm-reward (with gamma 0.999 the returns run into the hundreds: the value clip stalls the
#   critic and its gradients fill the global gradient-norm clip).
# - Pendulum-v1: rl-zoo's recipe without gSDE, with shorter rollouts, gamma 0.97, lambda 0.9, no
#   value clip, ReLU units; 1,000 evaluation episodes (20 s), which leave about +-3 of start-angle
#   noise in a seed's mean instead of +-10.
# - LunarLanderContinuous-v3: rl-zoo's recipe as published.
# - BipedalWalker-v3: rl-zoo's recipe with lr 2.5e-4 annealed, no value clip, and the std capped by
#   a line down to 0.4 (--final-action-std), 5M steps; chosen on seeds 1-3, claimed on fresh
#   seeds 8-11 (docs/benchmark/bipedalwalker.md).
# - HalfCheetah-v5, Walker2d-v5: rl-zoo's recipes for the v3 envs as published (one env,
#   normalised observations and rewards, constant lr, no value clip), with --vf-coef twice rl-zoo's:
#   SB3's value loss is the squared error, ours half of it.
# - Hopper-v5: the script's defaults (CleanRL's MuJoCo recipe); rl-zoo's fell over on seed 1.
# - CarRacing-v3 (discrete, the default) and CarRacing-v3:beta (--continuous): the script's
#   defaults, the PPO paper's Atari recipe. A run uses every core (8 async env workers, an update
#   thread per core: --torch-threads 0), so run it alone (--jobs 1); 20 evaluation episodes, not
#   100: each CarRacing episode is 250 steps of a renderer process.
# - CarRacing-v3:beta-tuned: the Beta policy with the critic freed (--norm-reward --no-clip-vloss),
#   the entropy bonus decaying to 0 and a start that steers straight at half gas without braking,
#   800k steps, 100 evaluation episodes; chosen on seed 1 at 300k, claimed on seeds 12 and 13
#   (docs/benchmark/carracing.md). About 2 h a seed here, alone on the machine.
# - CarRacing-v3:beta-capped: beta-tuned with each action's std capped by a line down to 0.1
#   (--final-action-std, as BipedalWalker's), so that the greedy (mean) action is what the last
#   updates trained; chosen on seed 1 at 300k, claimed on fresh seeds from 14.
# - CarRacing-v3:beta-sepcritic: beta-capped with the value on a trunk of its own
#   (--separate-critic) and 8 minibatches, 300k steps; chosen on seeds 1 and 2, claimed on fresh
#   seeds from 16. About 30 min a seed here, alone on the machine.
# A task named ENV:VARIANT is ENV trained with the variant's flags, reported on a row of its own.
RECIPES="
ppo.py|CartPole-v1|500000|100000|
ppo.py|Acrobot-v1|500000|100000|
ppo.py|LunarLander-v3|1000000|200000|--num-envs 16 --num-steps 128 --num-minibatches 32 --update-epochs 4 --gamma 0.999 --gae-lambda 0.98 --ent-coef 0.01 --learning-rate 3e-4 --no-clip-vloss --norm-reward
ppo_continuous.py|Pendulum-v1|102400|51200|--num-envs 4 --num-steps 256 --num-minibatches 16 --update-epochs 10 --gamma 0.97 --gae-lambda 0.9 --learning-rate 1e-3 --no-clip-vloss --activation relu --eval-episodes 1000
ppo_continuous.py|LunarLanderContinuous-v3|1000000|200000|--num-envs 16 --num-steps 1024 --num-minibatches 256 --update-epochs 4 --gamma 0.999 --gae-lambda 0.98 --ent-coef 0.01
ppo_continuous.py|BipedalWalker-v3|5000000|500000|--num-envs 32 --num-steps 2048 --num-minibatches 1024 --update-epochs 10 --gamma 0.999 --gae-lambda 0.95 --learning-rate 2.5e-4 --clip-coef 0.18 --no-clip-vloss --final-action-std 0.4
ppo_continuous.py|HalfCheetah-v5|1000000|50000|--num-envs 1 --num-steps 512 --num-minibatches 8 --update-epochs 20 --gamma 0.98 --gae-lambda 0.92 --learning-rate 2.0633e-5 --no-anneal-lr --clip-coef 0.1 --ent-coef 0.000401762 --vf-coef 1.16192 --max-grad-norm 0.8 --no-clip-vloss --hidden-size 256 --activation relu --no-ortho-init --init-action-std 0.1353
ppo_continuous.py|Hopper-v5|1000000|50000|
ppo_continuous.py|Walker2d-v5|1000000|50000|--num-envs 1 --num-steps 512 --num-minibatches 16 --update-epochs 20 --gamma 0.99 --gae-lambda 0.95 --learning-rate 5.05041e-5 --no-anneal-lr --clip-coef 0.1 --ent-coef 0.000585045 --vf-coef 1.743846 --max-grad-norm 1.0 --no-clip-vloss
ppo_atari_carracing.py|CarRacing-v3|300000|8192|--torch-threads 0 --eval-episodes 20
ppo_atari_carracing.py|CarRacing-v3:beta|300000|8192|--torch-threads 0 --eval-episodes 20 --continuous
ppo_atari_carracing.py|CarRacing-v3:beta-tuned|800000|8192|--torch-threads 0 --eval-episodes 100 --continuous --norm-reward --no-clip-vloss --anneal-ent --init-action-mean 0 0.5 0.05
ppo_atari_carracing.py|CarRacing-v3:beta-capped|800000|8192|--torch-threads 0 --eval-episodes 100 --continuous --norm-reward --no-clip-vloss --anneal-ent --init-action-mean 0 0.5 0.05 --final-action-std 0.1
ppo_atari_carracing.py|CarRacing-v3:beta-sepcritic|300000|8192|--torch-threads 0 --eval-episodes 100 --continuous --norm-reward --no-clip-vloss --anneal-ent --init-action-mean 0 0.5 0.05 --final-action-std 0.1 --separate-critic --num-minibatches 8
"
# left out of the default set: about an hour per seed here
LONG_TASKS="BipedalWalker-v3 HalfCheetah-v5 Hopper-v5 Walker2d-v5 CarRacing-v3 CarRacing-v3:beta CarRacing-v3:beta-tuned CarRacing-v3:beta-capped CarRacing-v3:beta-sepcritic"

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
for task in ${TASKS//,/ }; do  # every task named has a recipe, before anything is written
  echo "$RECIPES" | awk -F'|' -v t="$task" '$2==t {f=1} END {exit !f}' ||
    { echo "benchmark.sh: error: no recipe for task $task" >&2; exit 2; }
done
mkdir -p "$OUT/runs" "$OUT/logs"
: > "$OUT/jobs.txt"
# seed by seed, every task's first seeds first: a benchmark cut short still has them all
for seed in $SEED_LIST; do
  for task in ${TASKS//,/ }; do  # the recipe's flags come last: they override the common ones
    IFS='|' read -r script task full quick hparams <<< "$(echo "$RECIPES" | awk -F'|' -v t="$task" '$2==t')"
    steps=$([ "$QUICK" = 1 ] && echo "$quick" || echo "$full")
    echo "$script --env-id ${task%%:*} --seed $seed --total-timesteps $steps --torch-threads 1 --run-dir $OUT/runs/$task --exp-name bench --eval-episodes $EVAL_EPISODES $hparams" >> "$OUT/jobs.txt"
  done
done

if [ "$COMPARE" = 1 ]; then
  # The reference library, trained with ppo.py's CartPole defaults (same envs, steps, minibatches,
  # epochs, annealed lr, clips, coefficients, 64-64 tanh actor and critic), one torch thread.
  $PYTHON -m pip install -q stable-baselines3==2.9.2
  steps=$(echo "$RECIPES" | awk -F'|' -v q="$QUICK" '$2=="CartPole-v1"{print (q==1 ? $4 : $3)}')
  for seed in $SEED_LIST; do  # interleaved with ours, so both see the same load
    sed -i "/CartPole-v1 --seed $seed /a benchmark/sb3_ppo.py --env-id CartPole-v1 --seed $seed --total-timesteps $steps --run-dir $OUT/runs/sb3 --eval-episodes $EVAL_EPISODES" "$OUT/jobs.txt"
  done
fi

# a run that already finished in --out is not run again: a benchmark cut short is completed by
# running the same command (a run stopped midway has no summary.json and runs afresh); jobs.txt
# keeps every run, for the report
finished() {
  local run_dir seed
  run_dir=$(echo "$1" | awk '{for(i=1;i<NF;i++) if($i=="--run-dir") print $(i+1)}')
  seed=$(echo "$1" | awk '{for(i=1;i<NF;i++) if($i=="--seed") print $(i+1)}')
  compgen -G "$run_dir/*__${seed}__*/summary.json" > /dev/null
}
: > "$OUT/to_run.txt"
while read -r job; do finished "$job" || echo "$job" >> "$OUT/to_run.txt"; done < "$OUT/jobs.txt"
echo "benchmark: $(wc -l < "$OUT/to_run.txt") runs, $JOBS at a time; logs in $OUT/logs/" \
     "($(( $(wc -l < "$OUT/jobs.txt") - $(wc -l < "$OUT/to_run.txt") )) already finished there)"
run_one() {  # one training run; its summary.json lands in its run folder
  local log; log="$OUT/logs/$(echo "$*" | awk '{n=split($1, p, "/"); for (i = 1; i < NF; i++) if ($i == "--run-dir") m=split($(i+1), d, "/");
                                              print p[n] "_" d[m] "_seed" $5}').log"
  $PYTHON $* > "$log" 2>&1 && tail -n 1 "$log" || { echo "FAILED: $* (see $log)"; return 1; }
}
export -f run_one; export OUT PYTHON
xargs -P "$JOBS" -I{} bash -c 'run_one {}' < "$OUT/to_run.txt" || echo "benchmark: some runs failed; the table has the others"

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
    $PYTHON benchmark/env_rate.py "$module" "$env" ${num_envs:+--num-envs "$num_envs"} >> "$OUT/env_sps.txt" &
  done
  wait
done
echo "$QUICK $JOBS $EVAL_EPISODES" > "$OUT/settings.txt"  # how the runs were made, for --report
fi  # --report: only the table and plots below
[ -f "$OUT/settings.txt" ] && read -r QUICK JOBS EVAL_EPISODES < "$OUT/settings.txt"

$PYTHON benchmark/report.py "$OUT" --quick "$QUICK" --jobs "$JOBS" --eval-episodes "$EVAL_EPISODES"
