"""Every script end to end on a tiny budget, one test per behaviour, parametrised over the scripts
(`script` runs each test once per script; conftest.TINY holds each one's tiny run): the run's
folder, metrics and checkpoint, the checkpoint's evaluation, determinism, the KL options, the
sign of the entropy bonus, reward scaling, async envs and video, checkpoints that are not the
script's, the command line with --cuda, and Ctrl-C. Bad input: test_bad_input.py."""
import dataclasses
import glob
import importlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SCRIPTS, TINY, agent_for, small_agent, tiny

CPU = torch.device("cpu")


# the layer whose outputs parametrise each script's policy
POLICY_HEAD = {
    "ppo": lambda agent: agent.actor[-1],
    "ppo_continuous": lambda agent: agent.actor_mean[-1],
    "ppo_atari_carracing": lambda agent: agent.actor,
}


def state(path):
    return torch.load(path, weights_only=True)["model"]


# --- a run's artefacts ----------------------------------------------------------------------------

SUMMARY_KEYS = {
    "env_id",
    "seed",
    "run_dir",
    "checkpoint",
    "global_step",
    "sps",
    "steps_to_threshold",
    "reward_threshold",
    "episodes",
    "eval_greedy_mean",
    "eval_greedy_std",
    "eval_sampled_mean",
    "eval_sampled_std",
}
TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
        "charts/ent_coef",
        "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
        "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/kl_beta",
        "eval/greedy_return", "eval/sampled_return"}
SCRIPT_TAGS = {"ppo": set(), "ppo_continuous": {"charts/action_std"}, "ppo_atari_carracing": set()}


def test_a_run_writes_its_folder_and_metrics_and_its_checkpoint_evaluates(tmp_path, script):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    args = tiny(script, run_dir=str(tmp_path), kl_mode="penalty")
    summary = script.train(args)
    assert set(summary) == SUMMARY_KEYS and summary["global_step"] == args.total_timesteps
    assert summary["run_dir"].startswith(str(tmp_path)) and summary["episodes"]
    with open(os.path.join(summary["run_dir"], "summary.json")) as f:
        assert json.load(f)["eval_greedy_mean"] == summary["eval_greedy_mean"]
    tags = set(EventAccumulator(summary["run_dir"]).Reload().Tags()["scalars"])
    assert TAGS | SCRIPT_TAGS[script.__name__] <= tags

    # the saved agent scores what it scored at the end of training: same weights, same episodes
    result = script.main(script.Args(eval_checkpoint=summary["checkpoint"],
                                     eval_episodes=args.eval_episodes))
    assert result["env_id"] == args.env_id
    assert (result["eval_greedy_mean"], result["eval_greedy_std"]) == \
        (summary["eval_greedy_mean"], summary["eval_greedy_std"])
    assert np.isfinite(result["eval_sampled_mean"])
    # greedy only (--no-eval-sampled, as tests/test_trained.py evaluates the shipped agents): the
    # greedy pass comes first and draws no random numbers, so its score does not change
    greedy = script.main(script.Args(eval_checkpoint=summary["checkpoint"],
                                     eval_episodes=args.eval_episodes, eval_sampled=False))
    assert greedy == {key: result[key] for key in result if "sampled" not in key}


@pytest.mark.parametrize(
    "threads", [1, 2]
)  # the count changes results, but not their repeatability
def test_same_seed_same_result_different_seed_different(tmp_path, script, threads):
    a = script.train(tiny(script, run_dir=str(tmp_path / "a"), torch_threads=threads))
    b = script.train(tiny(script, run_dir=str(tmp_path / "b"), torch_threads=threads))
    c = script.train(tiny(script, run_dir=str(tmp_path / "c"), torch_threads=threads, seed=2))
    sa, sb, sc = state(a["checkpoint"]), state(b["checkpoint"]), state(c["checkpoint"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # normaliser statistics included
    assert a["episodes"] == b["episodes"] and a["eval_sampled_mean"] == b["eval_sampled_mean"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_overlapped_halves_are_repeatable(tmp_path, script):
    """--overlap with async envs: the halves take turns in a fixed order, so a seed still fixes
    the run (test_rollout_boundaries.py checks what the halves collect)."""
    runs = [script.train(tiny(script, run_dir=str(tmp_path / name), async_envs=True,
                              overlap=True)) for name in "ab"]
    sa, sb = (state(run["checkpoint"]) for run in runs)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert runs[0]["episodes"] == runs[1]["episodes"]
    assert runs[0]["eval_sampled_mean"] == runs[1]["eval_sampled_mean"]


# --- the update ----------------------------------------------------------------------------------

def collected(script, **overrides):
    """One rollout of the script's tiny env with a fresh agent, and its GAE."""
    args = tiny(script, **overrides)
    torch.manual_seed(0)
    envs = script.EnvGroups(args, args.num_envs)
    obs, _ = envs.reset(seed=0)
    agent = agent_for(script, envs)
    rollout = script.Rollout.empty(args.num_steps, args.num_envs, envs.single_observation_space,
                                   envs.single_action_space)
    script.collect_rollout(agent, envs, obs, rollout, None, CPU)
    envs.close()
    adv, ret = script.compute_gae(rollout.rewards, rollout.values, rollout.next_values,
                                  rollout.terminations, rollout.truncations, args.gamma,
                                  args.gae_lambda)
    return args, agent, rollout, adv, ret


# (--kl-mode, --target-kl, whether the epochs stop early): --target-kl alone turns early stopping
# on, as CleanRL's flag does; 'early-stop' is that with a target of 0.01 by default; the penalty
# aims at the target and never stops early
KL_CASES = [("clip", None, False), ("clip", 1e-9, True), ("early-stop", 1e-9, True),
            ("penalty", 1e-9, False)]


@pytest.mark.parametrize("kl_mode,target_kl,stops", KL_CASES)
def test_kl_modes(script, kl_mode, target_kl, stops):
    args, agent, rollout, adv, ret = collected(script, kl_mode=kl_mode, target_kl=target_kl,
                                               learning_rate=1e-2)
    assert args.early_stop == stops
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    stats = script.update(agent, optimizer, rollout, adv, ret, args, 1.0, args.ent_coef, CPU)
    assert all(np.isfinite(v) for v in stats.values())
    # early stop quits after the first minibatch that passes the (absurdly low) target
    assert stats["epochs"] == (1 if stops else args.update_epochs)


def test_early_stopping_takes_no_step_once_the_kl_has_passed_the_target(script):
    """The KL of the policy as it stands is measured before each minibatch step; past the target,
    the update stops before that step rather than after it. With a target that any step passes,
    exactly one step is taken (the first sees the rollout's own policy: KL 0)."""
    args, agent, rollout, adv, ret = collected(script, target_kl=1e-9, learning_rate=1e-2)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    steps, step = [], optimizer.step
    optimizer.step = lambda: steps.append(step())
    script.update(agent, optimizer, rollout, adv, ret, args, 1.0, args.ent_coef, CPU)
    assert len(steps) == 1


def test_the_penalty_adapts_to_the_kl_of_the_update_just_made(tmp_path, script, monkeypatch):
    """PPO paper, section 4: after the update, d = E[KL(pi_old, pi)] over the batch sets beta.
    update_kl is that KL (against numpy, from the log-probs before and after), and train()
    adapts beta with it."""
    args, agent, rollout, adv, ret = collected(script, kl_mode="penalty", learning_rate=1e-2)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    stats = script.update(agent, optimizer, rollout, adv, ret, args, 1.0, args.ent_coef, CPU)
    obs = torch.from_numpy(rollout.obs.reshape(-1, *rollout.obs.shape[2:]))
    actions = torch.from_numpy(rollout.actions.reshape(-1, *rollout.actions.shape[2:]))
    with torch.no_grad():
        logratio = (agent.get_action_and_value(obs, actions)[1].numpy().astype(np.float64)
                    - rollout.logprobs.ravel())
    assert stats["update_kl"] == pytest.approx(np.mean(np.expm1(logratio) - logratio), rel=1e-3)

    updates, adapted = [], []
    update, adapt = script.update, script.adapt_kl_beta
    monkeypatch.setattr(script, "update", lambda *a: updates.append(update(*a)) or updates[-1])
    monkeypatch.setattr(script, "adapt_kl_beta",
                        lambda beta, kl, target: adapted.append(kl) or adapt(beta, kl, target))
    script.train(tiny(script, run_dir=str(tmp_path), kl_mode="penalty"))
    assert adapted == [stats["update_kl"] for stats in updates] and adapted


def test_the_kl_target_defaults_to_0_01_where_a_mode_needs_one(script):
    assert script.Args(kl_mode="penalty").kl_target == 0.01
    assert script.Args(kl_mode="early-stop").early_stop and script.Args().kl_target == 0.01
    assert not script.Args().early_stop and script.Args(target_kl=0.02).kl_target == 0.02


def test_the_entropy_bonus_raises_the_entropy(script):
    """With zero advantages and no value loss, the loss is the entropy bonus alone: one plain
    gradient step on the whole batch must raise the policy's mean entropy on it."""
    args, agent, rollout, adv, ret = collected(script, ent_coef=0.1, vf_coef=0.0, norm_adv=False,
                                               num_minibatches=1, update_epochs=1)
    with torch.no_grad():  # a policy far from uniform, whose entropy has a gradient to follow
        POLICY_HEAD[script.__name__](agent).weight.normal_(0.0, 0.3)
    obs = torch.from_numpy(rollout.obs.reshape(-1, *rollout.obs.shape[2:]))
    actions = torch.from_numpy(rollout.actions.reshape(-1, *rollout.actions.shape[2:]))

    def mean_entropy():
        with torch.no_grad():
            return agent.get_action_and_value(obs, actions)[2].mean().item()
    before = mean_entropy()
    optimizer = torch.optim.SGD(agent.parameters(), lr=1e-3)  # a small step: first order holds
    script.update(agent, optimizer, rollout, np.zeros_like(adv), ret, args, 1.0, args.ent_coef, CPU)
    assert mean_entropy() > before


# --- rewards --------------------------------------------------------------------------------------

# a toy env of each script's kind whose every step pays the same raw reward (tests/toy_envs.py)
FLAT_REWARD = {"ppo": ("tests/Counter-v0", 1.0), "ppo_continuous": ("tests/BoxCounter-v0", 1.0),
               "ppo_atari_carracing": ("tests/FrameCounter-v0", -0.1)}


def test_norm_reward_scales_what_the_critic_learns_not_the_reported_returns(tmp_path, script):
    env_id, per_step = FLAT_REWARD[script.__name__]
    args = tiny(script, env_id=env_id, norm_reward=True)
    envs = script.EnvGroups(args, args.num_envs)
    obs, _ = envs.reset(seed=0)
    rollout = script.Rollout.empty(args.num_steps, args.num_envs, envs.single_observation_space,
                                   envs.single_action_space)
    agent = agent_for(script, envs)
    scaler = script.RewardScaler(args.num_envs, args.gamma)
    _, finished = script.collect_rollout(agent, envs, obs, rollout, scaler, CPU)
    envs.close()
    assert finished and all(ret == pytest.approx(per_step * length) for ret, length in finished)
    # the first reward meets a std of 0 and is clipped to +-10; the scaled rewards are not raw
    assert np.all(rollout.rewards[0] == 10 * np.sign(per_step))
    assert not np.allclose(rollout.rewards, per_step)
    summary = script.train(dataclasses.replace(args, run_dir=str(tmp_path)))
    assert all(ret == pytest.approx(per_step * length) for _, ret, length in summary["episodes"])


# --- envs in subprocesses, video ------------------------------------------------------------------

def video_codec(path: str) -> str:
    """The video codec ffmpeg (imageio-ffmpeg's own binary) reads in a file."""
    import imageio_ffmpeg
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
                           capture_output=True, text=True)
    return probe.stderr.split("Video: ", 1)[1].split()[0] if "Video: " in probe.stderr else ""


def test_async_envs_and_h264_videos_of_training_and_evaluation(tmp_path, script):
    summary = script.train(tiny(script, run_dir=str(tmp_path), async_envs=True, capture_video=True))
    step = summary["global_step"]
    evaluation = os.path.join(summary["run_dir"], f"eval-greedy-step-{step}-episode-0.mp4")
    assert video_codec(evaluation) == "h264"  # what browsers, TensorBoard and W&B play
    training = os.path.join(summary["run_dir"], "train-episode-0.mp4")  # env 0's first episode
    assert video_codec(training) == "h264"


def test_training_videos_are_env_0s_episodes_on_the_schedule(tmp_path, script):
    args = tiny(script, num_envs=2, async_envs=False, capture_video=True)
    envs = script.make_vector_env(args, args.num_envs)
    envs.set_attr("video_prefix", [str(tmp_path / "train"), None])  # as RunLog does
    envs.reset(seed=0)
    ended = 0
    while ended < 10:
        _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        ended += bool(terminated[0] or truncated[0])
    envs.close()
    videos = ["train-episode-0.mp4", "train-episode-1.mp4", "train-episode-8.mp4"]
    assert sorted(os.listdir(tmp_path)) == videos


@pytest.mark.parametrize("episode,recorded", [(0, True), (1, True), (2, False), (7, False),
                                              (8, True), (27, True), (28, False), (729, True),
                                              (999, False), (1000, True), (1001, False),
                                              (2000, True), (2744, False), (3000, True)])
def test_training_videos_follow_cleanrls_capped_cubic_schedule(script, episode, recorded):
    assert script.video_schedule(episode) is recorded


def test_a_video_that_cannot_be_written_is_one_warning_line(tmp_path, script, monkeypatch, capfd):
    def broken(path, frames, fps):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(script, "write_video", broken)
    summary = script.train(tiny(script, run_dir=str(tmp_path), capture_video=True))
    lines = [l for l in capfd.readouterr().err.splitlines() if "video" in l]
    videos = [line.split()[7] for line in lines]  # one line per video: training's, evaluation's
    assert len(set(videos)) == len(videos) and videos[0].endswith("train-episode-0.mp4:")
    assert videos[-1].endswith(f"eval-greedy-step-{summary['global_step']}-episode-0.mp4:")
    for line in lines:
        assert line.startswith(f"{script.__name__}.py: warning: could not write the video ")
        assert line.endswith("OSError: [Errno 28] No space left on device")
    assert np.isfinite(summary["eval_greedy_mean"])


def test_capture_video_prints_no_stray_lines(tmp_path):
    """SDL, which draws CartPole's frames, looks for a display and complains (XDG_RUNTIME_DIR)
    where there is none; frames for a file need none."""
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    flags = ["--capture-video", "--total-timesteps", "256", "--num-steps", "32",
             "--eval-episodes", "2"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "ppo.py"), *flags], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    [video] = glob.glob(str(tmp_path / "runs" / "*" / "eval-greedy-step-256-episode-0.mp4"))
    assert video_codec(video) == "h264"


# --- checkpoints that are not the script's --------------------------------------------------------

@pytest.mark.parametrize("writer,reader", [(w, r) for w in SCRIPTS for r in SCRIPTS if w != r])
def test_a_checkpoint_of_another_script_is_one_clear_line(tmp_path, writer, reader):
    written, read = importlib.import_module(writer), importlib.import_module(reader)
    foreign = str(tmp_path / "agent.pt")
    written.save_checkpoint(
        foreign, written.make_checkpoint(small_agent(written), written.Args(), 0)
    )
    with pytest.raises(SystemExit) as stop:
        read.main(read.Args(eval_checkpoint=foreign))
    [line] = str(stop.value.code).splitlines()
    assert line.startswith(f"{reader}.py: error: --eval-checkpoint:")
    assert f"is not a readable {reader}.py checkpoint" in line


# --- the command line -----------------------------------------------------------------------------

def run_cli(script, *argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, f"{script.__name__}.py"), *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_corrupt_checkpoint_is_one_clear_line_and_left_untouched(tmp_path, script):
    bad = tmp_path / "agent.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = run_cli(script, "--eval-checkpoint", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{script.__name__}.py: error: --eval-checkpoint:")
    assert "not a readable" in line
    assert bad.read_bytes() == b"not a checkpoint at all"


# the default env of each script, on a budget of one or two small rollouts: (flags, steps)
CLI_TINY = {
    "ppo": (["--total-timesteps", "256", "--num-steps", "32"], 256),
    "ppo_continuous": (["--total-timesteps", "2048"], 2048),
    "ppo_atari_carracing": (
        [
            "--num-envs",
            "2",
            "--num-steps",
            "8",
            "--num-minibatches",
            "2",
            "--total-timesteps",
            "16",
            "--torch-threads",
            "1",
        ],
        16,
    ),
}


def test_the_default_task_trains_from_the_command_line_and_cuda_falls_back(tmp_path, script):
    flags, steps = CLI_TINY[script.__name__]
    result = run_cli(script, "--cuda", *flags, "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device is available; running on the CPU" in result.stderr
    env_id = script.Args().env_id
    assert f"{env_id}: {steps:,} steps" in result.stdout
    [checkpoint] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    evaluated = run_cli(
        script, "--eval-checkpoint", checkpoint, "--eval-episodes", "1", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{env_id}  greedy:" in evaluated.stdout


# a run long enough to be under way when the signal comes, for each script, its envs in this
# process and in subprocesses (the pixel script's default)
CTRL_C_RUNS = [
    ("ppo", ["--no-async-envs", "--total-timesteps", "10000000"]),
    ("ppo", ["--async-envs", "--total-timesteps", "10000000"]),
    ("ppo_continuous", ["--no-async-envs", "--env-id", "Pendulum-v1", "--num-steps", "256",
                        "--num-minibatches", "4", "--total-timesteps", "500000"]),
    ("ppo_continuous", ["--async-envs", "--env-id", "Pendulum-v1", "--num-steps", "256",
                        "--num-minibatches", "4", "--total-timesteps", "500000"]),
    ("ppo_atari_carracing", ["--num-envs", "2", "--num-steps", "8", "--num-minibatches", "2",
                             "--total-timesteps", "10000000", "--torch-threads", "1"]),
]


@pytest.mark.parametrize("module,argv", CTRL_C_RUNS, ids=[f"{m}-{a[0]}" for m, a in CTRL_C_RUNS])
def test_ctrl_c_saves_a_checkpoint_that_evaluates(tmp_path, module, argv):
    """Ctrl-C reaches the whole foreground process group, the async env workers included. The
    child starts with SIGINT at its default, as in a terminal, even where this test process was
    started in the background (which ignores SIGINT, and children inherit that). Were the signal
    lost, the run would end by itself (and fail the test) rather than hang."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, f"{module}.py"), *argv],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not process.stdout.readline().startswith("step"):  # the first progress line:
            pass  # an update is complete, so there is something to save
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:  # never leave a long run behind
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    [checkpoint] = glob.glob(str(tmp_path / "runs" / "*" / "agent.pt"))
    script = importlib.import_module(module)
    agent, train_args = script.load_checkpoint(checkpoint)
    assert train_args.env_id == dict(zip(argv, argv[1:])).get("--env-id", script.Args().env_id)
    returns = script.evaluate(agent, dataclasses.replace(train_args, async_envs=False), 1, True,
                              100_001, CPU)
    assert returns.shape == (1,) and np.isfinite(returns).all()
