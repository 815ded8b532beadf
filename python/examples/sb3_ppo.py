"""Stable-Baselines3 PPO on denoise-gym: the single Gymnasium environment through SB3's
``DummyVecEnv``, or the native vector environment through the small SB3 ``VecEnv`` adapter
below. SB3's MLP policy starts from scratch (it cannot load the pretrained ε-network), so
this shows the plumbing, not a recipe.

    pip install ./python stable-baselines3 tensorboard
    python python/examples/sb3_ppo.py --vec native --episodes 128000 --out runs/py-sb3

It writes eval.json: dgym eval's SWD and MMD² of 10,000 samples of the trained policy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import denoise_gym as dg


class DenoisingSB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` over ``DenoisingVectorEnv``. SB3 resets in the same step (the
    returned observation of a finished episode is the next episode's first, the final one
    is in ``infos[i]["terminal_observation"]``); Gymnasium's env here resets on the next step,
    so the adapter resets right after the terminating step."""

    def __init__(self, venv: dg.DenoisingVectorEnv):
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions = None
        self._seed = None

    def reset(self):
        obs, _ = self.venv.reset(seed=self._seed)
        self._seed = None
        return obs

    def step_async(self, actions):
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, _ = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = [{} for _ in range(self.num_envs)]
        if dones.all():
            for i in range(self.num_envs):
                infos[i]["terminal_observation"] = obs[i]
                infos[i]["TimeLimit.truncated"] = False
            # The NEXT_STEP autoreset: one more step (actions ignored) starts the new episodes.
            obs, *_ = self.venv.step(np.zeros_like(self._actions))
        return obs, rewards.astype(np.float32), dones, infos

    def close(self):
        pass

    def seed(self, seed=None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.venv, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None):
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        raise NotImplementedError("the rows of the native environment have no methods of their own")

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def _indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vec", choices=["native", "dummy"], default="native")
    parser.add_argument("--episodes", type=int, default=128_000)
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--action-bound", type=float, default=5.0, help="finite action bounds, which SB3's env checker requires"
    )
    args = parser.parse_args()
    T = dg.DEFAULT_N_STEPS
    if args.vec == "native":
        env = DenoisingSB3VecEnv(dg.make_vec("8gaussians", num_envs=args.num_envs, action_bound=args.action_bound))
    else:
        check_env(dg.DenoisingEnv("8gaussians", action_bound=args.action_bound))
        env = DummyVecEnv(
            [lambda: gym.make("denoise_gym/8gaussians-v0", action_bound=args.action_bound) for _ in range(args.num_envs)]
        )
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=4 * T,
        batch_size=args.num_envs * T,
        n_epochs=4,
        gamma=1.0,
        seed=args.seed,
        tensorboard_log=args.out,
        verbose=0,
    )
    start = time.time()
    model.learn(total_timesteps=args.episodes * T)
    wall = time.time() - start
    # 10,000 samples of the trained (stochastic) policy, through the native env.
    venv = dg.make_vec("8gaussians", num_envs=10_000, reward=lambda x: np.zeros(len(x)), action_bound=args.action_bound)
    obs, _ = venv.reset(seed=1)
    for _ in range(T):
        actions, _ = model.predict(obs, deterministic=False)  # clipped to the bounds, as in training
        obs, *_ = venv.step(actions)
    final = dg.evaluate(obs[:, :-1], "8gaussians", seed=1)
    result = {"episodes": args.episodes, "env_steps": args.episodes * T, "wall_time_s": wall, "eval": final, "vec": args.vec}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({"wall_time_s": round(wall, 1), "swd": round(final["swd"], 4), "mmd2": round(final["mmd2"], 4),
                      "off_mode_fraction": round(final["off_mode_fraction"], 4)}))


if __name__ == "__main__":
    main()
