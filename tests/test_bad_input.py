"""Bad input, for every script: a non-zero exit, one line on stderr that names the flag and what is
allowed (no traceback), and nothing written. Each expected message is the start of that line after
"<script>: error: "; "..." stands for a part the test does not pin (an observation space's bounds).
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

BAD_INPUTS = {
    "ppo.py": [
        (["--env-id", "NoSuchEnv-v0"], "--env-id: unknown environment"),
        (
            ["--env-id", "Pendulum-v1"],
            "--env-id: Pendulum-v1 has continuous actions (Box); use ppo_continuous.py",
        ),
        (["--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
        (["--num-envs", "0"], "--num-envs must be a positive integer"),
        (["--learning-rate", "-1"], "--learning-rate must be in (0, 1], got -1"),
        (["--total-timesteps", "100"], "--total-timesteps 100 is less than one batch"),
        (["--gamma", "1.5"], "--gamma must be in [0, 1]"),
        (["--eval-checkpoint", "missing.pt"], "--eval-checkpoint: no such file"),
    ],
    "ppo_continuous.py": [
        (["--env-id", "NoSuchEnv-v0"], "--env-id: unknown environment"),
        (
            ["--env-id", "CartPole-v1"],
            "--env-id: CartPole-v1 has discrete actions (Discrete); use ppo.py",
        ),
        (["--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
        (["--num-envs", "0"], "--num-envs must be a positive integer"),
        (["--learning-rate", "-1"], "--learning-rate must be in (0, 1], got -1"),
        (["--total-timesteps", "100"], "--total-timesteps 100 is less than one batch"),
        (["--gae-lambda", "1.5"], "--gae-lambda must be in [0, 1]"),
        (["--init-action-std", "0"], "--init-action-std must be in [1e-6, 1e6], got 0"),
        (
            ["--final-action-std", "2"],
            "--final-action-std must be a positive number no larger than --init-action-std",
        ),
        (["--eval-checkpoint", "missing.pt"], "--eval-checkpoint: no such file"),
    ],
    "ppo_atari_carracing.py": [
        (["--env-id", "NoSuchEnv-v0"], "--env-id: unknown environment"),
        (
            ["--env-id", "CartPole-v1"],
            "--env-id: CartPole-v1 observations are ..., not RGB frames; use ppo.py for vector "
            "observations",
        ),
        (
            ["--env-id", "Pendulum-v1"],
            "--env-id: Pendulum-v1 observations are ..., not RGB frames; use ppo_continuous.py for "
            "vector observations",
        ),
        (
            ["--frame-size", "20"],
            "--frame-size must be at least 36 for the Nature CNN (and at most 1024), got 20",
        ),
        (["--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
        (["--negative-reward-cutoff", "-1"], "--negative-reward-cutoff must be >= 0"),
        (["--torch-threads", "-1"], "--torch-threads must be >= 0 (0: one per core), got -1"),
        (
            ["--init-action-mean", "0", "0.5", "0.05"],
            "--init-action-mean sets where the Beta policy starts: it needs --continuous",
        ),
        (
            ["--continuous", "--init-action-mean", "0", "0.5"],
            "--init-action-mean takes 3 values, one per action dimension of CarRacing-v3, got 2",
        ),
        (
            ["--continuous", "--init-action-mean", "0", "0.5", "0"],
            "--init-action-mean must be strictly inside the action bounds [-1.0, 0.0, 0.0] to "
            "[1.0, 1.0, 1.0], got [0.0, 0.5, 0.0]",
        ),
        (
            ["--final-action-std", "0.1"],
            "--final-action-std caps the Beta policy's std: it needs --continuous",
        ),
        (
            ["--continuous", "--final-action-std", "0.3"],
            "--final-action-std must be in (0, 0.2887], the std of the uniform on [0, 1], got "
            "(0.3,)",
        ),
        (
            ["--continuous", "--final-action-std", "0.1", "0.1"],
            "--final-action-std takes 1 value, or 3, one per action dimension of CarRacing-v3, "
            "got 2",
        ),

        (["--eval-checkpoint", "missing.pt"], "--eval-checkpoint: no such file"),
    ],
}
for cases in BAD_INPUTS.values():  # require_common, the same in every script
    cases.append((["--overlap", "--num-envs", "3"],
                  "--overlap steps the envs in two halves: --num-envs 3 must be even"))
if (
    importlib.util.find_spec("mujoco") is None
):  # the MuJoCo tasks are registered even without MuJoCo
    BAD_INPUTS["ppo_continuous.py"].append(
        (
            ["--env-id", "HalfCheetah-v5"],
            "--env-id: cannot create HalfCheetah-v5: MuJoCo is not installed",
        )
    )

CASES = [(script, argv, message) for script, cases in BAD_INPUTS.items() for argv, message in cases]


@pytest.mark.parametrize("script,argv,message", CASES,
                         ids=[f"{script}-{' '.join(argv)}" for script, argv, _ in CASES])
def test_bad_input_is_one_clear_line(tmp_path, script, argv, message):
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    expected = ".*".join(re.escape(part) for part in f"{script}: error: {message}".split("..."))
    assert re.match(expected, line), line
    assert not (tmp_path / "runs").exists()  # failed before writing anything
