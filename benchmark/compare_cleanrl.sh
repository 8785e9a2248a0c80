#!/usr/bin/env bash
# Whole-process wall time of one of our scripts against CleanRL's equivalent, same hyper-parameters,
# runs alternated (ours, CleanRL, ours, ...), medians and their ratio. For measuring, not for CI.
#
#   git clone https://github.com/vwxyzjn/cleanrl /tmp/cleanrl      # read and run, never copied
#   CLEANRL_DIR=/tmp/cleanrl benchmark/compare_cleanrl.sh 3 \
#       "ppo.py --env-id CartPole-v1 --total-timesteps 500000 --seed 1" \
#       "cleanrl/ppo.py --env-id CartPole-v1 --total-timesteps 500000 --no-cuda --seed 1"
#
# Ours run on PYTHON (default: python, the project's environment); CleanRL's in their own virtual
# environment (CLEANRL_VENV, default ~/.venvs/cleanrl) on the gymnasium release they pin (0.29.1),
# built on first use with the torch version ours has. Atari: ale-py 0.9 and Stable-Baselines3 2.3
# (CleanRL's Atari wrappers), and a .pth file that imports ale_py at start-up, because gymnasium
# 0.29 does not register the ALE ids by itself. CLEANRL_DIR is a checkout of CleanRL's repository.
set -u
rounds=$1; read -r -a ours <<<"$2"; read -r -a theirs <<<"$3"
[[ -n ${CLEANRL_DIR:-} && -f $CLEANRL_DIR/${theirs[0]} ]] || {
  echo "compare_cleanrl.sh: set CLEANRL_DIR to a checkout of CleanRL holding ${theirs[0]}" >&2; exit 2; }
CLEANRL_DIR=$(cd "$CLEANRL_DIR" && pwd)
py=$(command -v "${PYTHON:-python}") || { echo "compare_cleanrl.sh: no ${PYTHON:-python}" >&2; exit 2; }
venv=${CLEANRL_VENV:-$HOME/.venvs/cleanrl}
if [[ ! -x $venv/bin/python ]]; then
  torch=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "torch==$torch" gymnasium==0.29.1 \
    box2d==2.3.10 pygame tyro tensorboard stable-baselines3==2.3.2 ale-py==0.9.0 \
    opencv-python-headless || exit 2
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\nimport ale_py\n' "$CLEANRL_DIR" > "$site/cleanrl_checkout.pth"  # cleanrl_utils, ALE ids
fi
here=$(cd "$(dirname "$0")/.." && pwd); work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; cd "$work"
a=(); b=()
for ((i = 0; i < rounds; i++)); do
  s=$(date +%s.%N); "$py" "$here/${ours[0]}" "${ours[@]:1}" >ours.log 2>&1 || {
    echo "ours failed: $(tail -n 1 ours.log)"; exit 1; }
  a+=("$(echo "$(date +%s.%N) - $s" | bc)")
  s=$(date +%s.%N); "$venv/bin/python" "$CLEANRL_DIR/${theirs[0]}" "${theirs[@]:1}" >theirs.log 2>&1 || {
    echo "CleanRL failed: $(tail -n 1 theirs.log)"; exit 1; }
  b+=("$(echo "$(date +%s.%N) - $s" | bc)")
  echo "round $((i + 1)): ours ${a[-1]} s, CleanRL ${b[-1]} s"
  rm -rf runs
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
echo "median wall: ours ${ma} s, CleanRL ${mb} s; CleanRL / ours = $(echo "scale=2; $mb / $ma" | bc)x"
