"""--compile, for every script: the minibatch loss and its gradient through torch.compile against
the eager ones on a fixed batch, a training run that compiles, and the one line a machine without a
C++ compiler gets."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, small_agent, tiny


def fixed_batch(script, agent, n=64):
    """A fixed minibatch of the script's tiny env: observations, the agent's own actions and
    values, its log-probs nudged (so the ratio is not 1 and the clip bites), random advantages
    and value targets."""
    g = torch.Generator().manual_seed(0)
    if script.__name__ == "ppo_atari_carracing":
        obs = torch.randint(0, 256, (n, 2, 36, 36), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(n, {"ppo": 4, "ppo_continuous": 3}[script.__name__], generator=g)
    with torch.no_grad():
        actions, logprobs, _, values = agent.get_action_and_value(obs)
    advantages, logprob_shift, errors = torch.randn(3, n, generator=g)
    return obs, actions, logprobs + 0.3 * logprob_shift, advantages, values, values + errors


@pytest.mark.parametrize("kl_mode", ["clip", "penalty"])
def test_compiled_losses_and_gradients_are_the_eager_ones(script, kl_mode):
    torch.manual_seed(0)
    agent = small_agent(script)
    args = tiny(script, kl_mode=kl_mode)
    batch = fixed_batch(script, agent)
    results = []
    for losses in (script.minibatch_losses, script.compiled_minibatch_losses()):
        agent.zero_grad(set_to_none=True)
        loss, logged = losses(agent, *batch, args, 0.5, 0.01)
        loss.backward()
        results.append((loss.detach(), logged, [p.grad.clone() for p in agent.parameters()]))
    (loss, logged, grads), (compiled_loss, compiled_logged, compiled_grads) = results
    # the same up to float32 rounding: the generated kernels may sum in another order
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-6)
    assert compiled_logged.keys() == logged.keys()
    for key in logged:
        torch.testing.assert_close(compiled_logged[key], logged[key], rtol=1e-5, atol=1e-6)
    for compiled_grad, grad in zip(compiled_grads, grads):
        torch.testing.assert_close(compiled_grad, grad, rtol=1e-4, atol=1e-6)
    assert 0 < logged["clipfrac"] < 1  # ratios on both sides of the clip range


def test_a_compiled_run_trains_and_evaluates(tmp_path):
    import ppo
    summary = ppo.train(tiny(ppo, compile=True, run_dir=str(tmp_path)))
    assert summary["global_step"] == 2 * 4 * 32
    assert 9 <= summary["eval_greedy_mean"] <= 500


def test_compile_without_a_cpp_compiler_is_one_clear_line(tmp_path, script):
    env = {**os.environ, "PATH": str(tmp_path), "CXX": "no-such-compiler"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, f"{script.__name__}.py"),
                             "--compile"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{script.__name__}.py: error: --compile: on the CPU torch.compile "
                           "needs a C++ compiler"), line
    assert not (tmp_path / "runs").exists()
