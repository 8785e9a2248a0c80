"""The trained agents in trained/ (README, "Trained agents"): each evaluates, with the command
README gives next to it, to the greedy score README gives for it. The command is parsed as the
script's command line would parse it, so a flag in README's row (the pixel agent's
--eval-episodes) is one the test runs. Greedy only (--no-eval-sampled): the sampled pass that
follows it in README's command does not change the greedy score (test_end_to_end checks that)
and would double the time.

A score is a mean over episodes, and another CPU rounds the networks' sums in another order (its
kernels use other vector widths): in a chaotic env such as CarRacing a few episodes then go
another way, and the mean moves by a few points (README, "Trained agents"). So the test asks for
README's mean to within its own standard error, std / sqrt(episodes): the evaluation's sampling
noise (another agent, or an evaluation on other tracks, would most likely land outside it; the
pixel agent's weight layout, which moved its score by less, has a test of its own in
test_carracing.py). Where every episode scores the same (CartPole's 500 +- 0), that is the exact
number."""
import math
import os
import re
import shlex

import pytest

from conftest import ROOT

ROW = re.compile(r"^\| `python (\S+)\.py (--eval-checkpoint (trained/\S+\.pt)[^`]*)` \| "
                 r"\*\*([-\d.]+) \+- ([\d.]+)\*\* \|")


def readme_rows():
    with open(os.path.join(ROOT, "README.md")) as f:
        return [match.groups() for match in map(ROW.match, f.read().splitlines()) if match]


def test_readme_lists_every_trained_agent():
    listed = sorted(os.path.basename(path) for _, _, path, _, _ in readme_rows())
    assert listed and listed == sorted(os.listdir(os.path.join(ROOT, "trained")))


@pytest.mark.parametrize("name,command,path,mean,std", readme_rows(),
                         ids=[row[2] for row in readme_rows()])
def test_a_trained_agent_scores_what_readme_says(name, command, path, mean, std):
    import importlib
    import tyro
    script = importlib.import_module(name)
    args = tyro.cli(script.Args, args=[*shlex.split(command), "--no-eval-sampled"])
    args.eval_checkpoint = os.path.join(ROOT, path)  # the suite may run from another folder
    result = script.evaluate_checkpoint(args)
    standard_error = float(std) / math.sqrt(args.eval_episodes)
    assert abs(result["eval_greedy_mean"] - float(mean)) <= standard_error + 0.005, (
        f"{result['eval_greedy_mean']:.2f} +- {result['eval_greedy_std']:.2f}, README: {mean} +- "
        f"{std} (standard error {standard_error:.2f})")
