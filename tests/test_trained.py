"""The trained agents in trained/ (README, "Trained agents"): each evaluates, with the command
README gives next to it, to the greedy score README gives for it. The command is parsed as the
script's command line would parse it, so a flag in README's row (the pixel agent's
--eval-episodes) is one the test runs. Greedy only (--no-eval-sampled): the sampled pass that
follows it in README's command does not change the greedy score (test_end_to_end checks that)
and would double the time."""
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
    assert (f"{result['eval_greedy_mean']:.2f}", f"{result['eval_greedy_std']:.2f}") == (mean, std)
