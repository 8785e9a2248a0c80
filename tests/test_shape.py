"""The shape the three scripts share (README, "Layout"): the algorithm first and in one piece, then
one marked plumbing part; what plays the same role is the same code; train() reads like
Algorithm 1 of the PPO paper. The scripts are read with the ast module, not run (except the import
check at the end)."""
import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS

ALL = set(SCRIPTS)
DISCRETE = {"ppo", "ppo_atari_carracing"}

# The same code, docstrings included, in every script that defines it.
SHARED = {
    # the algorithm
    "env_spec": ALL, "make_vector_env": ALL, "EnvGroups": ALL, "layer_init": ALL,
    "categorical_entropy": DISCRETE,
    "keep_default_init": {"ppo", "ppo_continuous"}, "run_layers": {"ppo", "ppo_continuous"},
    "action_std_cap": {"ppo_continuous", "ppo_atari_carracing"},
    "compute_gae": ALL, "schedules": ALL, "adapt_kl_beta": ALL,
    "process_place": ALL, "join_processes": ALL, "collective": ALL, "mean_over_processes": ALL,
    "average_gradients": ALL, "start_alike": ALL, "gather_over_processes": ALL,
    "NORM_CLIP": ALL, "RunningMeanStd": ALL, "RewardScaler": ALL, "Rollout": ALL,
    "finished_episodes": ALL, "collect_rollout": ALL,
    "normalize_advantages": ALL, "policy_loss": ALL, "value_loss": ALL, "approx_kl": ALL,
    "explained_variance": ALL, "minibatch_losses": ALL,
    "compiled_minibatch_losses": ALL, "update": ALL,
    # the plumbing
    "SCRIPT": ALL, "STOP_SIGNALS": ALL, "ConfigError": ALL, "NonFinite": ALL, "ProcessLost": ALL,
    "RunStopped": ALL,
    "check_finite": ALL, "require": ALL, "require_common": ALL, "require_writable_folder": ALL,
    "require_memory": ALL, "creation_error": ALL, "pick_device": ALL, "seed_everything": ALL,
    "reset_seed": ALL, "ignore_ctrl_c_in_worker": ALL, "on_cpu": ALL, "random_states": ALL,
    "set_random_states": ALL, "make_checkpoint": ALL, "save_checkpoint": ALL,
    "read_checkpoint": ALL, "load_checkpoint": ALL, "resume_settings": ALL, "restore": ALL,
    "write_video": ALL, "video_schedule": ALL, "RecordEpisodes": ALL, "eval_video_prefix": ALL,
    "evaluate": ALL, "eval_modes": ALL, "evaluate_checkpoint": ALL,
    "health_warnings": ALL, "format_progress": ALL, "new_run_folder": ALL, "RunLog": ALL,
    "raise_keyboard_interrupt": ALL, "ignore_ctrl_c_while_exiting": ALL,
    "require_display": ALL, "main": ALL,
}

# What is meant to differ: the point of each script (its settings, env, agent and distribution),
# and the checks of what a script accepts.
DIFFERS = {
    "ppo": {"Args", "make_env", "Agent", "entropy_floor", "train", "validate_args",
            "check_env_id"},
    "ppo_continuous": {"Args", "make_env", "Agent", "gaussian_log_prob", "gaussian_entropy",
                       "entropy_floor", "train", "validate_args",
                       "check_env_id"},
    "ppo_atari_carracing": {"Args", "CAR_RACING", "is_atari", "register_atari", "ActionRepeat",
                            "FastDrawing", "NegativeRewardCutoff", "GreyResize", "EpisodicLife",
                            "FireReset", "make_env", "BETA_EPS", "ResidualBlock", "impala_stack",
                            "trunk", "Agent", "beta_start_bias", "BETA_MAX_STD",
                            "entropy_floor", "train", "MIN_FRAME_SIZE", "validate_args",
                            "check_env_id", "beta_start_mean", "beta_final_std"},
}

# Everything after train(): a reader who stops at the end of train() has read the algorithm.
PLUMBING = {name for name, scripts in SHARED.items() if scripts == ALL} - {
    "env_spec", "make_vector_env", "EnvGroups", "layer_init", "compute_gae", "schedules",
    "adapt_kl_beta",
    "NORM_CLIP",
    "process_place", "join_processes", "collective", "mean_over_processes", "average_gradients",
    "start_alike",
    "gather_over_processes",
    "RunningMeanStd",
    "RewardScaler", "Rollout", "finished_episodes", "collect_rollout", "normalize_advantages",
    "policy_loss", "value_loss", "approx_kl", "explained_variance", "minibatch_losses",
    "compiled_minibatch_losses", "update",
} | {"MIN_FRAME_SIZE", "validate_args", "check_env_id", "beta_start_mean", "beta_final_std"}

SECTIONS = ["# The environment", "# The agent", "# The PPO math", "# Several processes",
            "# Collect", "# Update",
            "# Training", "# Plumbing"]


def source(name):
    with open(os.path.join(ROOT, f"{name}.py")) as f:
        return f.read()


def definitions(name):
    """Top-level name -> its ast node, in the order of the file (the __main__ block aside)."""
    found = {}
    for node in ast.parse(source(name)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                found[target.id] = node
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_top_level_name_is_shared_or_listed_as_meant_to_differ(name):
    names = set(definitions(name))
    expected = {piece for piece, scripts in SHARED.items() if name in scripts} | DIFFERS[name]
    assert names - expected == set(), "new pieces: add them to SHARED or DIFFERS"
    assert expected - names == set(), "listed pieces missing from the script"


@pytest.mark.parametrize("piece", sorted(SHARED))
def test_shared_pieces_are_the_same_code(piece):
    dumps = {name: ast.dump(definitions(name)[piece]) for name in sorted(SHARED[piece])}
    first = next(iter(dumps.values()))
    assert all(dump == first for dump in dumps.values()), \
        f"{piece} differs between {sorted(dumps)}: copy one version to the others"


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_algorithm_comes_first_then_one_plumbing_part(name):
    order = list(definitions(name))
    after_train = order[order.index("train") + 1:]
    assert set(after_train) == PLUMBING & set(order)
    assert not PLUMBING & set(order[:order.index("train")])
    text = source(name)
    positions = [text.find("\n" + section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions
    assert positions[-1] > text.index("\ndef train(")
    assert text.index("\nclass Args") < positions[0]


def code_lines(node, text):
    """Lines of a node's source that hold code (not blank, not only a comment)."""
    lines = text.splitlines()[node.lineno - 1:node.end_lineno]
    return [line for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("name", SCRIPTS)
def test_train_reads_like_algorithm_1(name):
    """At most 60 lines; one loop over the iterations whose body is about a dozen lines of code
    (anneal, collect, advantages, update, adapt the KL coefficient, log; ppo_continuous.py's std
    cap makes its 17, and the pixel script's thread count for the rollout and the update its 18)."""
    text = source(name)
    train = definitions(name)["train"]
    assert train.end_lineno - train.lineno + 1 <= 60
    [loop] = [node for node in ast.walk(train) if isinstance(node, ast.For)]
    body = [line for stmt in loop.body for line in code_lines(stmt, text)]
    assert len(body) <= 18, "\n".join(body)
    calls = {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
             for node in ast.walk(loop) if isinstance(node, ast.Call)}
    assert {"collect_rollout", "compute_gae", "update", "adapt_kl_beta", "iteration"} <= calls


def python_files():
    """The scripts, the suite and the benchmark's Python, relative to the repository's root."""
    found = [f"{name}.py" for name in SCRIPTS]
    for folder in ("tests", "benchmark"):
        found += sorted(os.path.join(folder, f) for f in os.listdir(os.path.join(ROOT, folder))
                        if f.endswith(".py"))
    return found


@pytest.mark.parametrize("path", python_files())
def test_lines_are_at_most_100_characters(path):
    with open(os.path.join(ROOT, path)) as f:
        long = [i + 1 for i, line in enumerate(f.read().splitlines()) if len(line) > 100]
    assert long == [], f"{path}: lines over 100 characters: {long}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_main_block_only_parses_the_command_line(name):
    [block] = [node for node in ast.parse(source(name)).body if isinstance(node, ast.If)]
    assert ast.unparse(block) == "if __name__ == '__main__':\n    main(tyro.cli(Args))"


@pytest.mark.parametrize("name", SCRIPTS)
def test_one_word_for_the_mean_or_most_likely_action(name):
    """'greedy' everywhere; 'deterministic' only for torch's deterministic kernels."""
    text = source(name).replace("torch_deterministic", "").replace("cudnn.deterministic", "")
    text = text.replace("use deterministic torch kernels", "")
    assert not re.findall(r"determinis", text)


def test_importing_a_script_has_no_side_effects(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import ppo, ppo_continuous, ppo_atari_carracing"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert list(tmp_path.iterdir()) == []
