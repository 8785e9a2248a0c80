"""Env-only stepping rate of a script's training vector env: random actions through the same
wrappers and the same number of envs as training, for a fixed time. benchmark.sh runs one copy
per job slot side by side, so the machine is as loaded as during training; the rate is the
ceiling on training SPS.

    python benchmark/env_rate.py ppo CartPole-v1 --num-envs 16 --seconds 10

Prints one line: the env id and its rate in environment steps per second.
"""
import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="ppo, ppo_continuous or ppo_atari_carracing")
    parser.add_argument("env_id")
    parser.add_argument("--num-envs", type=int, help="default: the script's own default")
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    script = importlib.import_module(options.module)
    args = script.Args(env_id=options.env_id)
    if options.num_envs:
        args.num_envs = options.num_envs
    envs = script.make_vector_env(args, args.num_envs)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    steps, start = 0, time.time()
    while time.time() - start < options.seconds:
        envs.step(envs.action_space.sample())
        steps += args.num_envs
    print(options.env_id, steps / (time.time() - start))
    envs.close()


if __name__ == "__main__":
    main()
