"""Shared fixtures. The suite imports the scripts at the repository root as modules (importing a
script must not start training); a test that holds for every script takes the `script` fixture
and runs once per entry of SCRIPTS, with `tiny(script)`, the script's smallest real run."""
import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# classic-control and Box2D rendering go through pygame; CI machines have no display
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import toy_envs  # noqa: E402  (registers the tests/ envs; needs ROOT on the path)

SCRIPTS = ["ppo", "ppo_continuous", "ppo_atari_carracing"]

# each script's smallest real run: a few iterations on a cheap env of its kind, one torch thread
TINY = {
    "ppo": dict(env_id="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=2 * 4 * 32,
                eval_episodes=2),
    # 2 envs x 4 rollouts of 64 steps: each env ends one 200-step Pendulum episode
    "ppo_continuous": dict(env_id="Pendulum-v1", num_envs=2, num_steps=64, num_minibatches=4,
                           total_timesteps=2 * 4 * 64, eval_episodes=2),
    "ppo_atari_carracing": dict(env_id="tests/Glimpse-v0", num_envs=2, num_steps=16,
                                num_minibatches=2, total_timesteps=2 * 2 * 16, eval_episodes=2,
                                frame_size=toy_envs.FRAME, frame_stack=2, action_repeat=1,
                                async_envs=False, torch_threads=1),
}


def pytest_collection_modifyitems(items):
    """The shipped agents' evaluations (the longest tests, minutes each for the pixel agent) go
    first: under -n auto they then run beside the rest instead of after it."""
    items.sort(key=lambda item: "test_trained.py::test_a_" not in item.nodeid)


@pytest.fixture(params=SCRIPTS)
def script(request):
    return importlib.import_module(request.param)


def tiny(script, **overrides):
    """Args of the script's tiny run, with overrides."""
    return script.Args(**{**TINY[script.__name__], **overrides})


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The networks here are tiny and the CI machine has two cores, shared with env workers: one
    thread is several times faster than two. train() sets its own count; restore it after."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_agent(script):
    """An untrained agent for each script's tiny env."""
    return {"ppo": lambda: script.Agent(4, 2),
            "ppo_continuous": lambda: script.Agent(3, 1),
            "ppo_atari_carracing": lambda: script.Agent((2, 36, 36), 2, False)}[script.__name__]()


def agent_for(script, envs):
    """An untrained agent for these envs."""
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    if script.__name__ == "ppo":
        return script.Agent(obs_space.shape[0], int(action_space.n))
    if script.__name__ == "ppo_continuous":
        return script.Agent(obs_space.shape[0], action_space.shape[0])
    return script.Agent(obs_space.shape, int(action_space.n), False)
