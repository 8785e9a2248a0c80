"""Where users already work (issue 14, in part): one's own env as `--env-id module:EnvId`, in all
three scripts; the seed example's switches (activation, orthogonal initialisation) in the MLP
scripts, kept in the checkpoint so evaluation rebuilds the same network."""
import importlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, tiny

# each script's kind of env, registered by a module of the user's under an id of their own
OWN_ENV = {"ppo": "toy_envs:CounterEnv", "ppo_continuous": "toy_envs:BoxCounterEnv",
           "ppo_atari_carracing": "toy_envs:FrameCounter"}


def test_one_s_own_env_trains_and_evaluates_as_module_colon_id(tmp_path, script, monkeypatch):
    module, name = f"my_envs_{script.__name__}", f"My{script.__name__.title()}Env-v0"
    entry_point = OWN_ENV[script.__name__]
    (tmp_path / f"{module}.py").write_text(
        "import gymnasium as gym\n"
        f"gym.register({name!r}, entry_point={entry_point!r}, max_episode_steps=5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env_id = f"{module}:{name}"
    summary = script.train(tiny(script, env_id=env_id, run_dir=str(tmp_path / "runs")))
    assert summary["env_id"] == env_id and summary["episodes"]
    assert os.path.basename(summary["run_dir"]).startswith(f"{module}-{name}__")
    result = script.main(script.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=2))
    assert result["eval_greedy_mean"] == summary["eval_greedy_mean"]


def test_readme_s_own_env_example_runs_from_the_command_line(tmp_path):
    """README, "Your own env": a module that registers the env, then --env-id module:EnvId."""
    (tmp_path / "my_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyCartPole-v0', max_episode_steps=100,\n"
        "             entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    flags = ["--env-id", "my_envs:MyCartPole-v0", "--total-timesteps", "256", "--num-steps", "32",
             "--eval-episodes", "2", "--async-envs"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "ppo.py"), *flags], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "my_envs:MyCartPole-v0: 256 steps" in result.stdout
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "ppo.py"), "--env-id",
                              "not_a_module:MyCartPole-v0"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    [line] = missing.stderr.strip().splitlines()
    expected = "ppo.py: error: --env-id: unknown environment 'not_a_module:MyCartPole-v0'"
    assert line.startswith(expected), line
    assert "not_a_module" in line.split("(", 1)[1]


@pytest.mark.parametrize("module", ["ppo", "ppo_continuous"])
def test_activation_and_orthogonal_init_switches_are_kept_in_the_checkpoint(tmp_path, module):
    script = importlib.import_module(module)
    summary = script.train(tiny(script, run_dir=str(tmp_path), activation="relu", ortho_init=False))
    agent, _ = script.load_checkpoint(summary["checkpoint"])
    assert agent.config["activation"] == "relu" and agent.config["ortho_init"] is False
    kinds = {type(m) for m in agent.modules()}
    assert nn.ReLU in kinds and nn.Tanh not in kinds
    result = script.main(script.Args(eval_checkpoint=summary["checkpoint"], eval_episodes=2))
    assert result["eval_greedy_mean"] == summary["eval_greedy_mean"]

    # orthogonal: the first layer's columns are orthogonal with the gain sqrt(2), biases zero;
    # PyTorch's default (uniform, scaled by the fan-in) is neither
    torch.manual_seed(0)
    args = (8, 2)
    ortho, plain = script.Agent(*args), script.Agent(*args, ortho_init=False)
    for agent, orthogonal in ((ortho, True), (plain, False)):
        first = agent.critic[0]
        gram = first.weight.T @ first.weight
        assert torch.allclose(gram, 2 * torch.eye(8), atol=1e-5) == orthogonal
        assert bool((first.bias == 0).all()) == orthogonal


def test_watch_without_a_display_is_one_line(tmp_path, script, monkeypatch):
    summary = script.train(tiny(script, run_dir=str(tmp_path)))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit) as stop:
        script.main(script.Args(eval_checkpoint=summary["checkpoint"], watch=True))
    [line] = str(stop.value.code).splitlines()
    assert line.startswith(f"{script.__name__}.py: error: --watch needs a display"), line


def test_watch_plays_the_greedy_agent_in_a_human_window(tmp_path, monkeypatch):
    """With a display (here SDL's dummy video driver, conftest.py), one env in render_mode
    'human' plays the greedy episodes and reports their returns."""
    import ppo
    summary = ppo.train(tiny(ppo, run_dir=str(tmp_path)))
    monkeypatch.setenv("DISPLAY", ":0")
    made = []
    make_env = ppo.make_env
    monkeypatch.setattr(ppo, "make_env",
                        lambda args, *rest: made.append(args.watch) or make_env(args, *rest))
    result = ppo.main(ppo.Args(eval_checkpoint=summary["checkpoint"], watch=True, eval_episodes=2))
    # one window, its episodes one after another (so not the evaluation's one env per episode)
    assert made == [True] and result["eval_greedy_mean"] >= 8  # CartPole lasts 8 steps or more


FAKE_WANDB = '''"""Stands in for Weights & Biases: records how the scripts call it."""
calls = []


def init(**kwargs):
    calls.append(("init", kwargs))


def finish(**kwargs):
    calls.append(("finish", kwargs))
'''


def test_track_logs_the_run_to_weights_and_biases(tmp_path, script, monkeypatch):
    """CleanRL's --track: W&B starts before the TensorBoard writer and mirrors its events
    (sync_tensorboard), named after the run folder, with the run's settings; it ends with the
    run."""
    (tmp_path / "wandb.py").write_text(FAKE_WANDB)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    summary = script.train(tiny(script, run_dir=str(tmp_path / "runs"), track=True,
                                wandb_project_name="a-project", wandb_entity="a-team"))
    calls = sys.modules["wandb"].calls
    assert [name for name, _ in calls] == ["init", "finish"]
    init = calls[0][1]
    assert (init["project"], init["entity"]) == ("a-project", "a-team") and init["sync_tensorboard"]
    assert init["name"] == os.path.basename(summary["run_dir"])
    assert init["config"]["env_id"] == summary["env_id"] and calls[1][1] == {"exit_code": 0}


def test_track_without_wandb_installed_is_one_line(tmp_path, script, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(SystemExit) as stop:
        script.main(tiny(script, run_dir=str(tmp_path / "runs"), track=True))
    assert str(stop.value.code) == (f"{script.__name__}.py: error: --track needs Weights & Biases, "
                                    f"which is not installed: pip install wandb")
    assert not (tmp_path / "runs").exists()
