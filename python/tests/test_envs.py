"""The Gymnasium environments: the checker, seeding, the vector env against single envs,
and the oracle reward against the mixture's density."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import denoise_gym as dg


def policy(x: np.ndarray, t: int) -> np.ndarray:
    """A fixed, deterministic action: shrink toward a ring of radius 2 step by step."""
    return (0.8 * x + 0.1 * t).astype(np.float32)


def test_single_env_passes_gymnasiums_checker():
    check_env(dg.DenoisingEnv("8gaussians"), skip_render_check=True)
    check_env(gym.make("denoise_gym/25gaussians-v0").unwrapped, skip_render_check=True)


def test_spaces_and_episode_shape():
    env = gym.make("denoise_gym/8gaussians-v0", n_steps=3)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (3,) and env.action_space.shape == (2,)
    assert obs.dtype == np.float32 and obs[-1] == 3 and info["t"] == 3
    rewards, terminated = [], False
    for step in range(3):
        obs, reward, terminated, truncated, info = env.step(policy(obs[:-1], int(obs[-1])))
        rewards.append(reward)
        assert not truncated and obs[-1] == 2 - step
    assert terminated and rewards[:2] == [0.0, 0.0] and rewards[2] != 0.0


def test_reset_with_a_seed_is_reproducible_and_none_continues_the_stream():
    env = dg.DenoisingEnv("8gaussians")
    first = env.reset(seed=42)[0]
    again = env.reset(seed=42)[0]
    np.testing.assert_array_equal(first, again)
    following = env.reset()[0]
    assert not np.array_equal(first, following)
    other = dg.DenoisingEnv("8gaussians")
    other.reset(seed=42)
    np.testing.assert_array_equal(other.reset()[0], following)
    assert not np.array_equal(env.reset(seed=43)[0], first)


def run_episode(env, obs):
    rewards = []
    while True:
        obs, reward, terminated, _, _ = env.step(policy(obs[:-1], int(obs[-1])))
        rewards.append(reward)
        if terminated:
            return obs, rewards


def test_vector_env_rows_equal_single_envs_seeded_seed_plus_i():
    n, seed = 5, 100
    venv = dg.make_vec("8gaussians", num_envs=n)
    singles = [dg.DenoisingEnv("8gaussians") for _ in range(n)]
    obs = venv.reset(seed=seed)[0]
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    for episode in range(2):
        np.testing.assert_array_equal(obs, np.stack(single_obs))
        finals = []
        for i, env in enumerate(singles):
            final, rewards = run_episode(env, single_obs[i])
            finals.append((final, rewards[-1]))
        for _ in range(venv.n_steps):
            obs, rewards, terminated, truncated, info = venv.step(policy(obs[:, :-1], int(obs[0, -1])))
        assert terminated.all() and not truncated.any() and (info["t"] == 0).all()
        np.testing.assert_array_equal(obs, np.stack([f for f, _ in finals]))
        np.testing.assert_array_equal(rewards, np.array([r for _, r in finals]))
        # NEXT_STEP autoreset: the next step resets every row (actions ignored), each row
        # continuing its own generator, as a single env's reset() without a seed does.
        obs, rewards, terminated, truncated, _ = venv.step(np.full((n, 2), np.nan))
        assert (rewards == 0).all() and not terminated.any() and (obs[:, -1] == venv.n_steps).all()
        single_obs = [env.reset()[0] for env in singles]


def test_gymnasium_make_vec_reaches_the_native_vector_env():
    venv = gym.make_vec("denoise_gym/8gaussians-v0", num_envs=3)
    assert isinstance(venv.unwrapped, dg.DenoisingVectorEnv)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert venv.single_observation_space.shape == (3,) and venv.observation_space.shape == (3, 3)
    sync = gym.make_vec("denoise_gym/8gaussians-v0", num_envs=3, vectorization_mode="sync")
    np.testing.assert_array_equal(venv.reset(seed=7)[0], sync.reset(seed=7)[0])


def mixture_log_density(x: np.ndarray) -> np.ndarray:
    """log p of 8 Gaussians written out here: centres 4/1.414 · (unit directions), std 0.5/1.414."""
    s = 1 / np.sqrt(2)
    unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    centres, std = 4 * unit / 1.414, 0.5 / 1.414
    squared = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    log_components = -squared / (2 * std**2) - np.log(2 * np.pi * std**2) + np.log(1 / 8)
    top = log_components.max(1)
    return top + np.log(np.exp(log_components - top[:, None]).sum(1))


def test_oracle_reward_is_the_mixture_log_density():
    venv = dg.make_vec("8gaussians", num_envs=64)
    obs = venv.reset(seed=1)[0]
    for _ in range(venv.n_steps):
        obs, rewards, terminated, _, _ = venv.step(2.0 * obs[:, :-1])
    x0 = obs[:, :-1].astype(np.float64)
    np.testing.assert_allclose(rewards, mixture_log_density(x0), rtol=1e-5, atol=1e-4)
    # The Rust oracle as a reward object gives the same numbers the env handed out.
    np.testing.assert_array_equal(dg.OracleReward("8gaussians")(obs[:, :-1]), rewards.astype(np.float32))


def test_callable_reward_sees_the_final_samples():
    seen = []

    def distance_to_origin(x0):
        seen.append(x0.copy())
        return -np.linalg.norm(x0, axis=1)

    venv = dg.make_vec("8gaussians", num_envs=4, reward=distance_to_origin)
    obs = venv.reset(seed=0)[0]
    for _ in range(venv.n_steps):
        obs, rewards, *_ = venv.step(obs[:, :-1] * 0.5)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], obs[:, :-1])
    np.testing.assert_allclose(rewards, -np.linalg.norm(obs[:, :-1], axis=1), rtol=1e-6)


def test_envs_are_usable_from_another_thread():
    import threading

    venv = dg.make_vec("8gaussians", num_envs=8)
    results = {}

    def work():
        obs = venv.reset(seed=5)[0]
        for _ in range(venv.n_steps):
            obs, rewards, *_ = venv.step(obs[:, :-1])
        results["rewards"] = rewards

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    obs = venv.reset(seed=5)[0]
    for _ in range(venv.n_steps):
        obs, rewards, *_ = venv.step(obs[:, :-1])
    np.testing.assert_array_equal(results["rewards"], rewards)
