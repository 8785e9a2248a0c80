"""Shared fixtures. The suite imports the scripts at the repository root as modules (importing a
script must not start training); a test that holds for every script takes the `script` fixture
and runs once per entry of SCRIPTS."""
import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# classic-control and Box2D rendering go through pygame; CI machines have no display
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

SCRIPTS = ["ppo", "ppo_continuous", "ppo_atari_carracing"]


@pytest.fixture(params=SCRIPTS)
def script(request):
    return importlib.import_module(request.param)
