"""The trained agents in trained/ (README, "Trained agents"): each evaluates, with the command
README gives next to it, to the greedy score README gives for it. Greedy only (--no-eval-sampled):
the sampled pass that follows it in README's command does not change the greedy score
(test_end_to_end checks that) and would double the time."""
import os
import re

import pytest

from conftest import ROOT

ROW = re.compile(r"^\| `python (\S+)\.py --eval-checkpoint (trained/\S+\.pt)` \| "
                 r"\*\*([-\d.]+) \+- ([\d.]+)\*\* \|")


def readme_rows():
    with open(os.path.join(ROOT, "README.md")) as f:
        return [match.groups() for match in map(ROW.match, f.read().splitlines()) if match]


def test_readme_lists_every_trained_agent():
    listed = sorted(os.path.basename(path) for _, path, _, _ in readme_rows())
    assert listed and listed == sorted(os.listdir(os.path.join(ROOT, "trained")))


@pytest.mark.parametrize("name,path,mean,std", readme_rows(), ids=lambda v: str(v))
def test_a_trained_agent_scores_what_readme_says(name, path, mean, std):
    import importlib
    script = importlib.import_module(name)
    result = script.evaluate_checkpoint(script.Args(eval_checkpoint=os.path.join(ROOT, path),
                                                    eval_sampled=False))
    assert (f"{result['eval_greedy_mean']:.2f}", f"{result['eval_greedy_std']:.2f}") == (mean, std)
