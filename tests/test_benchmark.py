"""benchmark.sh's Python (benchmark/): the report's table and plots from a folder of runs, and the
one-line hint when the packages are missing. The runs themselves are the scripts' (tested
elsewhere); what is checked here is what the report makes of their summary.json files."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmark"))
import report  # noqa: E402


def fake_run(out, task, seed, returns, greedy, sps):
    run = out / "runs" / task / f"{task}__bench__{seed}"
    run.mkdir(parents=True)
    episodes = [[100 * (i + 1), r, int(r)] for i, r in enumerate(returns)]
    summary = {"env_id": task.split(":")[0], "seed": seed, "global_step": 100 * len(returns),
               "sps": sps, "steps_to_threshold": None, "reward_threshold": 475.0,
               "episodes": episodes, "eval_greedy_mean": greedy, "eval_greedy_std": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))


def test_the_report_tables_each_task_and_plots_training_and_evaluation(tmp_path, monkeypatch):
    fake_run(tmp_path, "CartPole-v1", 1, [10.0] * 30, 480.0, 1000.0)
    fake_run(tmp_path, "CartPole-v1", 2, [20.0] * 30, 470.0, 3000.0)
    (tmp_path / "jobs.txt").write_text(
        "ppo.py --env-id CartPole-v1 --seed 1 --run-dir x/runs/CartPole-v1 --eval-episodes 100\n")
    (tmp_path / "env_sps.txt").write_text("CartPole-v1 4000\nCartPole-v1 4000\n")
    monkeypatch.setattr(sys, "argv", ["report.py", str(tmp_path), "--jobs", "2"])
    report.main()
    table = (tmp_path / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| CartPole-v1 |"))
    # mean and std of the two seeds' greedy evaluations, the worst seed, mean SPS, ratio to env
    assert "| 475.0 +- 5.0 | 470.0 |" in row and "| 2,000 | 4,000 | 0.50 |" in row, row
    assert "up to 2 runs side by side" in table
    assert (tmp_path / "CartPole-v1.png").stat().st_size > 10_000


def test_benchmark_sh_without_the_packages_is_one_line(tmp_path):
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "--quick"],
                            env=dict(os.environ, PYTHON="/bin/false"), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("benchmark.sh: error: /bin/false lacks the project's packages")


@pytest.mark.parametrize("values,expected", [([1.0, 2.0, 3.0], [1.0, 1.5, 2.0])])
def test_the_curve_is_the_mean_of_the_last_20_returns_so_far(values, expected):
    summary = {"episodes": [[100 * (i + 1), v, 1] for i, v in enumerate(values)]}
    assert list(report.curve(summary, [100, 200, 300])) == expected


def test_benchmark_sh_runs_only_the_seeds_not_finished_in_its_folder(tmp_path):
    """Run again with the same --out after a cut, benchmark.sh trains only the seeds that have no
    finished run (summary.json) there. PYTHON is a stand-in that records what it is asked to run."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/usr/bin/env bash\necho "$@" >> "$(dirname "$0")/calls"\n'
                           '[ "$1" = benchmark/env_rate.py ] && echo "$3 1000"\nexit 0\n')
    fake_python.chmod(0o755)
    out = tmp_path / "out"
    finished = out / "runs" / "CartPole-v1" / "CartPole-v1__bench__1__1795000000"
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text("{}")
    cut = out / "runs" / "CartPole-v1" / "CartPole-v1__bench__2__1795000001"  # stopped midway
    cut.mkdir(parents=True)
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "--quick", "--tasks",
                             "CartPole-v1", "--seeds", "3", "--jobs", "1", "--out", str(out)],
                            env=dict(os.environ, PYTHON=str(fake_python)), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "2 runs, 1 at a time" in result.stdout and "(1 already finished there)" in result.stdout
    trained = [line.split() for line in (tmp_path / "calls").read_text().splitlines()
               if line.startswith("ppo.py")]
    assert [words[words.index("--seed") + 1] for words in trained] == ["2", "3"]
    assert len((out / "jobs.txt").read_text().splitlines()) == 3  # the report reads every run's


def recipes():
    """benchmark.sh's RECIPES lines: (script, task, full steps, quick steps, flags)."""
    with open(os.path.join(ROOT, "benchmark.sh")) as f:
        text = f.read()
    block = text.split('RECIPES="\n', 1)[1].split('\n"', 1)[0]
    return [tuple(line.split("|")) for line in block.splitlines()]


@pytest.mark.parametrize("script_file,task,full,quick,flags", recipes(),
                         ids=[recipe[1] for recipe in recipes()])
def test_every_recipe_is_a_command_line_its_script_accepts(script_file, task, full, quick, flags):
    """A slip in a recipe's flags (some runs take hours) shows here, not after the queue starts:
    benchmark.sh's job line for the task, parsed and checked as the script would."""
    import importlib
    import shlex
    import tyro
    script = importlib.import_module(script_file.removesuffix(".py"))
    for steps in (full, quick):
        args = tyro.cli(script.Args, args=["--env-id", task.split(":")[0], "--seed", "1",
                                           "--total-timesteps", steps, "--torch-threads", "1",
                                           "--eval-episodes", "100", *shlex.split(flags)])
        script.validate_args(args)
