"""README's quick start, exactly as written (`python ppo.py --env-id CartPole-v1`: the script's
default recipe, CleanRL's classic-control hyper-parameters, 500k steps on the CPU): it learns
CartPole-v1 (greedy evaluation at 475 or more) and prints no health warning, so a newcomer's first
run raises no false alarm. The 200k-step budget of the earlier learning test is held by
test_reliability.py's interrupted-and-resumed CartPole run."""
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_quick_start_learns_cartpole_without_a_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "ppo.py"), "--env-id", "CartPole-v1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    greedy = float(re.search(r"greedy ([-\d.]+)", result.stdout.splitlines()[-1]).group(1))
    assert greedy >= 475, result.stdout.splitlines()[-1]
