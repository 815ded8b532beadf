"""Every bad input is a Python exception naming what was wrong, never a crash."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import denoise_gym as dg


@pytest.fixture
def env():
    env = dg.DenoisingEnv("8gaussians")
    env.reset(seed=0)
    return env


@pytest.fixture
def venv():
    venv = dg.make_vec("8gaussians", num_envs=3)
    venv.reset(seed=0)
    return venv


def test_wrong_action_shape(env, venv):
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(2,\)"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(3, 2\)"):
        venv.step(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(3,\) for 3 rows|expected \(n, 2\)|shape"):
        dg.NativeVecEnv(2, 4, 3).step(np.zeros((3, 5), dtype=np.float32))


def test_wrong_action_dtype(env, venv):
    with pytest.raises(TypeError, match="floating-point"):
        env.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(TypeError, match="dtype <U"):
        venv.step(np.full((3, 2), "a"))


def test_non_finite_actions(env, venv):
    with pytest.raises(ValueError, match=r"nan at index \(1,\)"):
        env.step(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match=r"inf at index \(2, 0\)"):
        venv.step(np.array([[0, 0], [0, 0], [np.inf, 0]], dtype=np.float32))
    native = dg.NativeVecEnv(2, 4, 1)
    native.reset(0)
    with pytest.raises(ValueError, match="row 0, column 1"):
        native.step(np.array([[0.0, np.nan]], dtype=np.float32))


def test_step_before_reset_and_after_termination():
    env = dg.DenoisingEnv("8gaussians", n_steps=1)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.step(np.zeros(2, dtype=np.float32))
    env.reset(seed=0)
    assert env.step(np.zeros(2, dtype=np.float32))[2]
    with pytest.raises(gym.error.ResetNeeded, match="terminated"):
        env.step(np.zeros(2, dtype=np.float32))
    native = dg.NativeVecEnv(2, 1, 2)
    with pytest.raises(ValueError, match="before reset"):
        native.step(np.zeros((2, 2), dtype=np.float32))
    native.reset(0)
    native.step(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="terminated"):
        native.step(np.zeros((2, 2), dtype=np.float32))


def test_unknown_environment_names():
    with pytest.raises(ValueError, match="8gaussians"):
        dg.make_vec("9gaussians", num_envs=2)
    with pytest.raises(gym.error.NameNotFound):
        gym.make("denoise_gym/9gaussians-v0")
    with pytest.raises(ValueError, match="no exact log-density"):
        dg.OracleReward("swissroll")
    with pytest.raises(ValueError, match="num_envs"):
        dg.make_vec("8gaussians", num_envs=0)


def test_missing_run_and_run_without_energy(tmp_path, ddpm_run):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        dg.make_vec("8gaussians", 2, reward=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dg.load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        dg.EnergyReward.from_run(tmp_path / "nope")
    with pytest.raises(dg.DenoiseGymError, match="has no learned energy"):
        dg.make_vec("8gaussians", 2, reward=ddpm_run)
    with pytest.raises(dg.DenoiseGymError, match="has no learned energy"):
        dg.load_run(ddpm_run).energy(np.zeros((1, 2)))


def run_to_end(venv):
    obs = venv.reset(seed=0)[0]
    for _ in range(venv.n_steps):
        obs, rewards, *_ = venv.step(obs[:, :-1])
    return rewards


def test_callable_reward_that_returns_the_wrong_shape_or_raises():
    with pytest.raises(dg.RewardCallableError, match=r"shape \(2,\) for 3 samples"):
        run_to_end(dg.make_vec("8gaussians", 3, reward=lambda x: np.zeros(2)))
    with pytest.raises(dg.RewardCallableError, match="not numbers"):
        run_to_end(dg.make_vec("8gaussians", 3, reward=lambda x: ["a", "b", "c"]))
    with pytest.raises(dg.RewardCallableError, match="returned nan for sample 1"):
        run_to_end(dg.make_vec("8gaussians", 3, reward=lambda x: np.array([0, np.nan, 0])))

    def broken(x):
        raise KeyError("oops")

    with pytest.raises(dg.RewardCallableError, match="broken raised KeyError") as caught:
        run_to_end(dg.make_vec("8gaussians", 3, reward=broken))
    assert isinstance(caught.value.__cause__, KeyError)
    assert issubclass(dg.RewardCallableError, dg.DenoiseGymError)


def test_bad_reward_and_config_values():
    with pytest.raises(TypeError, match="reward must be"):
        dg.make_vec("8gaussians", 2, reward=3)
    with pytest.raises(ValueError, match="hiden"):
        dg.EnergyReward(2, hiden=3)
    with pytest.raises(ValueError, match="lr"):
        dg.EnergyReward(2, lr=-1.0)
    reward = dg.EnergyReward(2)
    with pytest.raises(ValueError, match=r"shape \(4, 3\); expected \(n, 2\)"):
        reward.update(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="must be finite"):
        reward.update(np.zeros((4, 2)), np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="at least one"):
        reward.update(np.zeros((0, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="dimension 2"):
        dg.DenoisingVectorEnv("digits", num_envs=2, reward=dg.OracleReward("8gaussians"))


def test_train_rejects_a_bad_config_before_writing_anything(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a shipped config"):
        dg.train("no-such-config", out=tmp_path / "a")
    with pytest.raises(ValueError, match="pretrain.iteratons|iteratons"):
        dg.train("gcd-8gaussians", out=tmp_path / "b", set={"pretrain.iteratons": 3})
    assert not (tmp_path / "b").exists()


def test_action_bound():
    env = dg.DenoisingEnv("8gaussians", action_bound=3.0)
    assert env.action_space.low.tolist() == [-3.0, -3.0] and env.action_space.high.tolist() == [3.0, 3.0]
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"-3.5 at index \(1,\), outside the action space's ±3.0"):
        env.step(np.array([0.0, -3.5], dtype=np.float32))
    assert env.step(np.array([0.0, -3.0], dtype=np.float32))[0].shape == (3,)
    with pytest.raises(ValueError, match="action_bound"):
        dg.make_vec("8gaussians", 2, action_bound=0.0)


def test_sizes_nothing_can_hold_are_errors_not_aborts():
    with pytest.raises((ValueError, MemoryError), match="Dataset.sample"):
        dg.Dataset("8gaussians").sample(2**62)
    with pytest.raises((ValueError, MemoryError), match="NativeVecEnv"):
        dg.NativeVecEnv(2, 4, 2**60)


def test_review_findings_stay_fixed(gcd_run):
    # A first reset without a seed is random, not always seed 0.
    assert not np.array_equal(dg.DenoisingEnv().reset()[0], dg.DenoisingEnv().reset()[0])
    sync = gym.make_vec("denoise_gym/8gaussians-v0", num_envs=3, vectorization_mode="sync")
    rows = sync.reset()[0]
    assert not np.array_equal(rows[0], rows[1])
    # Only data sets with a density get an id of their own; the others take a reward.
    with pytest.raises(gym.error.NameNotFound):
        gym.make("denoise_gym/swissroll-v0")
    env = gym.make("denoise_gym/Denoise-v0", dataset="swissroll", reward=lambda x: -np.abs(x).sum(1))
    env.reset(seed=0)
    # A callable cannot change the observation it is handed.
    def mutate(x):
        x[:] = 99
        return np.zeros(len(x))
    venv = dg.make_vec("8gaussians", 2, n_steps=1, reward=lambda x: np.asarray(x).sum(1))
    obs = venv.reset(seed=0)[0]
    mutating = dg.make_vec("8gaussians", 2, n_steps=1, reward=mutate)
    mutating.reset(seed=0)
    with pytest.raises(dg.RewardCallableError, match="ValueError"):
        mutating.step(obs[:, :-1])
    # A reward that raised ends the episode all the same: the next step autoresets.
    broken = dg.make_vec("8gaussians", 2, n_steps=1, reward=lambda x: 1 / 0)
    obs = broken.reset(seed=0)[0]
    with pytest.raises(dg.RewardCallableError):
        broken.step(obs[:, :-1])
    obs, rewards, terminated, *_ = broken.step(obs[:, :-1])
    assert (obs[:, -1] == 1).all() and not terminated.any()
    # Sizes and ranges of EnergyReward as a config's [reward] checks them.
    with pytest.raises(ValueError, match="hidden"):
        dg.EnergyReward(2, hidden=0)
    with pytest.raises((ValueError, MemoryError)):
        dg.EnergyReward(2**62)
    with pytest.raises((ValueError, MemoryError)):
        dg.EnergyReward(2, hidden=2**40)
    with pytest.raises(ValueError, match="finite"):
        dg.EnergyReward(2).energy([[np.nan, 0.0]])
    with pytest.raises(ValueError, match="finite"):
        dg.OracleReward("8gaussians")([[np.nan, 0.0]])
    # Steps and seeds out of range are ValueErrors.
    sampler = dg.load_run(gcd_run).sampler()
    for t in (-1, 0, 5, 2**64):
        with pytest.raises(ValueError, match="not a step"):
            sampler.mean(np.zeros((1, 2)), t)
    with pytest.raises(ValueError, match="seed"):
        dg.DenoisingEnv().reset(seed=-1)
    with pytest.raises(ValueError, match="≥ 0"):
        sampler.running_costs().observe(-np.ones((4, 3)))
    # The action bound is checked in the space's float32.
    bounded = dg.DenoisingEnv(action_bound=1.0)
    bounded.reset(seed=0)
    bounded.step(np.array([1.00000001, 0.0]))  # 1.0 in float32
    with pytest.raises(FileNotFoundError):
        dg.Dataset("csv", path="/nonexistent/points.csv")
    with pytest.raises(ValueError):
        dg.Dataset("8gaussians", mixture_weights=[1.0])
