"""Gymnasium environments over denoise-gym's Rust ``DenoisingEnv``.

One episode is a T-step denoising chain: ``reset`` draws ``x_T ~ N(0, I)``; each action is
the next state ``x_{t-1}``; the episode terminates after T steps, at the sample ``x_0``,
which the reward scores. Rewards before the last step are 0 (the running costs of the
entropy-regularised return belong to the agent: see ``Sampler.running_costs``).

Observation: a float32 vector ``[x_t, t]`` of length d + 1, the state followed by the step
(T after a reset, 0 at the end), in ``Box(low=[-inf]*d + [0], high=[inf]*d + [T])``.
Action: ``x_{t-1}``, a float32 vector in ``Box(-inf, inf, (d,))``, or ``Box(-b, b, (d,))`` with
``action_bound=b`` (for libraries that need finite bounds, such as Stable-Baselines3; an
action outside them is a ``ValueError``).
The info dict holds ``t``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import _native
from ._native import DenoiseGymError, EnergyReward, NativeVecEnv, OracleReward

__all__ = [
    "RewardSpec",
    "RewardCallableError",
    "DenoisingEnv",
    "DenoisingVectorEnv",
    "make_vec",
    "register_envs",
    "DEFAULT_N_STEPS",
]

#: T when neither the caller nor a run sets it (the shipped configs' T).
DEFAULT_N_STEPS = 4

#: The data set of an environment given none, when its reward needs one (the oracle, a
#: callable); a run's EBM needs none (its dimension is the run's).
DEFAULT_DATASET = "8gaussians"

#: What a reward may be: ``"oracle"`` (the data set's exact log-density), the path of a
#: finished run (its EBM, ``-E(x_0)``), an ``OracleReward`` or ``EnergyReward`` (which may be
#: learning), or a callable from the ``n × d`` float32 batch of final samples to ``n`` rewards.
RewardSpec = Union[str, "os.PathLike[str]", OracleReward, EnergyReward, Callable[[np.ndarray], Any]]


class RewardCallableError(DenoiseGymError):
    """A reward callable raised, or returned something that is not one finite reward per sample."""


class _Reward:
    """A resolved reward: a native model the Rust environment applies, or a Python callable."""

    def __init__(self, reward: RewardSpec, dataset: Optional[Union[str, _native.Dataset]], n_steps: Optional[int]):
        self.native: Optional[Union[OracleReward, EnergyReward]] = None
        self.callable: Optional[Callable[[np.ndarray], Any]] = None
        run_steps: Optional[int] = None
        if isinstance(reward, (OracleReward, EnergyReward)):
            self.native = reward
            dim = reward.dim
        elif isinstance(reward, str) and reward == "oracle":
            law = _dataset(dataset or DEFAULT_DATASET)
            self.native = OracleReward(law)
            dim = law.dim
        elif isinstance(reward, (str, os.PathLike)):
            path = Path(reward)
            if not path.is_dir():
                raise FileNotFoundError(
                    f"reward {str(reward)!r}: no run directory there (a reward is \"oracle\", a run "
                    "directory, an OracleReward/EnergyReward, or a callable)"
                )
            self.native = EnergyReward.from_run(path)
            dim = self.native.dim
            config = _run_config(path)
            run_steps = int(config.get("policy", {}).get("n_steps", DEFAULT_N_STEPS))
        elif callable(reward):
            self.callable = reward
            dim = _dataset(dataset or DEFAULT_DATASET).dim
        else:
            raise TypeError(
                f"reward must be \"oracle\", a run directory, an OracleReward/EnergyReward or a callable, "
                f"got {type(reward).__name__}"
            )
        if dataset is not None and self.callable is None:
            law = _dataset(dataset)
            if law.dim != dim:
                raise ValueError(f"the reward takes dimension {dim}, data set {law.name!r} has {law.dim}")
        self.dim: int = dim
        if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer))):
            raise TypeError(f"n_steps must be an int, got {type(n_steps).__name__}")
        self.n_steps: int = int(n_steps if n_steps is not None else (run_steps or DEFAULT_N_STEPS))
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {self.n_steps}")

    def score(self, x0: np.ndarray, native_rewards: np.ndarray) -> np.ndarray:
        """The rewards of the final samples ``x0``: the native ones, or the callable's."""
        if self.callable is None:
            return native_rewards.astype(np.float64)
        name = getattr(self.callable, "__name__", repr(self.callable))
        # A read-only copy: the callable cannot change the observation handed back.
        x0 = x0.copy()
        x0.setflags(write=False)
        try:
            out = self.callable(x0)
        except Exception as error:  # noqa: BLE001 - re-raised with the callable named
            raise RewardCallableError(f"reward callable {name} raised {type(error).__name__}: {error}") from error
        try:
            rewards = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise RewardCallableError(
                f"reward callable {name} returned {type(out).__name__}, not numbers: {error}"
            ) from error
        n = x0.shape[0]
        if rewards.shape not in ((n,), (n, 1)):
            raise RewardCallableError(
                f"reward callable {name} returned shape {rewards.shape} for {n} samples; expected ({n},)"
            )
        rewards = rewards.reshape(n)
        if not np.all(np.isfinite(rewards)):
            bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
            raise RewardCallableError(f"reward callable {name} returned {rewards[bad]} for sample {bad}")
        return rewards


def _dataset(dataset: Optional[Union[str, _native.Dataset]]) -> _native.Dataset:
    if dataset is None:
        raise ValueError("this reward needs a data set (dataset=...) to know the dimension")
    if isinstance(dataset, _native.Dataset):
        return dataset
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a data set's name or a Dataset, got {type(dataset).__name__}")
    return _native.Dataset(dataset)


def _run_config(path: Path) -> dict:
    import json

    return json.loads(_native.run_config_json(path))


def _actions(actions: Any, shape: Sequence[int], bound: Optional[float] = None) -> np.ndarray:
    """The actions as a float32 array of ``shape`` (inside ``±bound`` when one is set), or the
    error that names what is wrong."""
    array = np.asarray(actions)
    if array.dtype.kind != "f":
        raise TypeError(f"actions must be floating-point (the action space is float32), got dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"actions have shape {array.shape}; expected {tuple(shape)}")
    if not np.all(np.isfinite(array)):
        index = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"actions hold {array[tuple(index)]} at index {tuple(int(i) for i in index)}; every entry must be finite")
    array = np.ascontiguousarray(array, dtype=np.float32)
    # Checked in float32, the action space's dtype (1.00000001 is 1.0 there).
    if bound is not None and np.any(np.abs(array) > np.float32(bound)):
        index = np.argwhere(np.abs(array) > np.float32(bound))[0]
        raise ValueError(
            f"actions hold {array[tuple(index)]} at index {tuple(int(i) for i in index)}, outside the action space's ±{bound}"
        )
    return array


def _seed(seed: Any) -> Optional[int]:
    """A reset seed as the native env takes it (an int in [0, 2**64)), or a ValueError."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


def _native_seed(native: NativeVecEnv, seed: Optional[int]) -> Optional[int]:
    """The seed of a native reset: the caller's, or for a first reset without one a seed from
    the operating system's entropy (Gymnasium: an unseeded environment is random, not always
    the same); None continues the generators."""
    if seed is None and native.t is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0])
    return seed


def _setup(
    env: Any,
    dataset: Optional[Union[str, _native.Dataset]],
    reward: RewardSpec,
    n_steps: Optional[int],
    action_bound: Optional[float],
    render_mode: Optional[str],
    num_envs: int,
) -> tuple[spaces.Box, spaces.Box]:
    """What both environment classes set up: the reward, the native environment of
    ``num_envs`` rows and the lock; returns one row's observation and action spaces."""
    if render_mode is not None:
        raise ValueError(f"render_mode {render_mode!r}: this environment renders nothing")
    env.render_mode = None
    env._reward = _Reward(reward, dataset, n_steps)
    env.dim = env._reward.dim
    env.n_steps = env._reward.n_steps
    env.action_bound = action_bound
    single_spaces = _spaces(env.dim, env.n_steps, action_bound)
    env._native = NativeVecEnv(env.dim, env.n_steps, num_envs, env._reward.native, 0)
    # Re-entrant: a reward callable may step or reset this env from its own thread.
    env._lock = threading.RLock()
    return single_spaces


def _spaces(dim: int, n_steps: int, action_bound: Optional[float]) -> tuple[spaces.Box, spaces.Box]:
    if action_bound is not None and not (np.isfinite(action_bound) and action_bound > 0):
        raise ValueError(f"action_bound must be a finite number > 0 or None, got {action_bound!r}")
    low = np.full(dim + 1, -np.inf, dtype=np.float32)
    high = np.full(dim + 1, np.inf, dtype=np.float32)
    low[-1], high[-1] = 0.0, float(n_steps)
    observation = spaces.Box(low=low, high=high, dtype=np.float32)
    bound = np.inf if action_bound is None else float(action_bound)
    action = spaces.Box(low=-bound, high=bound, shape=(dim,), dtype=np.float32)
    return observation, action


def _observations(x: np.ndarray, t: int) -> np.ndarray:
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = x
    out[:, -1] = t
    return out


class DenoisingEnv(gym.Env):
    """One denoising episode (a ``gymnasium.Env``): ``num_envs = 1`` of the Rust environment.

    ``dataset`` (a name or a ``Dataset``) gives the oracle its density and a callable reward
    its dimension (``"8gaussians"`` when None); a run's EBM needs none. ``n_steps`` is T (the
    run's T for a run's EBM, else 4).

    ``reset(seed=s)`` starts the episode that row i of a ``DenoisingVectorEnv`` reset with
    ``s - i`` starts. Stepping before ``reset`` or after the episode terminated raises
    ``gymnasium.error.ResetNeeded``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: Optional[Union[str, _native.Dataset]] = None,
        reward: RewardSpec = "oracle",
        n_steps: Optional[int] = None,
        action_bound: Optional[float] = None,
        render_mode: Optional[str] = None,
    ):
        self.observation_space, self.action_space = _setup(self, dataset, reward, n_steps, action_bound, render_mode, 1)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        """Draws ``x_T``; returns ``([x_T, T], {"t": T})``. Without a seed, the first reset
        draws one from the OS's entropy and later ones continue the generator."""
        seed = _seed(seed)
        with self._lock:
            super().reset(seed=seed)
            x = self._native.reset(_native_seed(self._native, seed))
            return _observations(x, self.n_steps)[0], {"t": self.n_steps}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Moves to ``x_{t-1} = action``; the reward is the final sample's at the last step, else 0."""
        with self._lock:
            t = self._native.t
            if t is None:
                raise gym.error.ResetNeeded("step() before reset(): call reset() first")
            if t == 0:
                raise gym.error.ResetNeeded("the episode terminated at t = 0: call reset() before step()")
            a = _actions(action, (self.dim,), self.action_bound)
            x, native_reward, terminated, t = self._native.step(a[None, :])
            reward = self._reward.score(x, native_reward)[0] if terminated else 0.0
            return _observations(x, t)[0], float(reward), bool(terminated), False, {"t": t}


class DenoisingVectorEnv(VectorEnv):
    """``num_envs`` denoising episodes stepped together by the Rust environment (a native
    ``gymnasium.vector.VectorEnv``, not a loop of single environments).

    Row i after ``reset(seed=s)`` is the episode a ``DenoisingEnv`` reset with ``s + i``
    starts. Autoreset is ``NEXT_STEP``: the ``step`` after the one that terminated resets
    every row (rows continue their own generators), ignores the actions, and returns the
    new ``[x_T, T]`` with rewards 0 and no termination. All rows share the clock, so they
    terminate together.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        dataset: Optional[Union[str, _native.Dataset]] = None,
        num_envs: int = 1,
        reward: RewardSpec = "oracle",
        n_steps: Optional[int] = None,
        action_bound: Optional[float] = None,
        render_mode: Optional[str] = None,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int ≥ 1, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.single_observation_space, self.single_action_space = _setup(
            self, dataset, reward, n_steps, action_bound, render_mode, self.num_envs
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = False

    def _info(self, t: int) -> dict:
        return {"t": np.full(self.num_envs, t, dtype=np.int64), "_t": np.ones(self.num_envs, dtype=bool)}

    def reset(
        self, *, seed: Optional[Union[int, Sequence[int]]] = None, options: Optional[dict] = None
    ) -> tuple[np.ndarray, dict]:
        """Draws ``x_T`` for every row; ``seed`` is an int s (row i seeded with s + i), or the
        list ``[s, s + 1, ...]`` Gymnasium's own vector environments take."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seeds = list(seed)
            if all(s is None for s in seeds):
                seeds = [None]
            elif any(s is None for s in seeds) or len(seeds) != self.num_envs or any(
                _seed(s) != _seed(seeds[0]) + i for i, s in enumerate(seeds)
            ):
                raise ValueError(
                    f"seed: a list of seeds must be [s, s + 1, ..., s + {self.num_envs - 1}] (row i is seeded with s + i) or all None"
                )
            seed = seeds[0]
        seed = _seed(seed)
        with self._lock:
            if seed is not None:
                self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
            x = self._native.reset(_native_seed(self._native, seed))
            self._autoreset = False
            return _observations(x, self.n_steps), self._info(self.n_steps)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of every row. See the class for the autoreset."""
        n = self.num_envs
        with self._lock:
            if self._native.t is None:
                raise gym.error.ResetNeeded("step() before reset(): call reset() first")
            if self._autoreset:
                x = self._native.reset(None)
                self._autoreset = False
                return (
                    _observations(x, self.n_steps),
                    np.zeros(n, dtype=np.float64),
                    np.zeros(n, dtype=bool),
                    np.zeros(n, dtype=bool),
                    self._info(self.n_steps),
                )
            a = _actions(actions, (n, self.dim), self.action_bound)
            x, native_rewards, terminated, t = self._native.step(a)
            # The episodes are over whether or not scoring them succeeds: the next step resets.
            self._autoreset = bool(terminated)
            rewards = self._reward.score(x, native_rewards) if terminated else np.zeros(n, dtype=np.float64)
            return (
                _observations(x, t),
                rewards,
                np.full(n, bool(terminated)),
                np.zeros(n, dtype=bool),
                self._info(t),
            )


def make_vec(
    name: str = "8gaussians",
    num_envs: int = 1,
    reward: RewardSpec = "oracle",
    n_steps: Optional[int] = None,
    action_bound: Optional[float] = None,
) -> DenoisingVectorEnv:
    """``num_envs`` episodes over the built-in data set ``name`` (its dimension, and its
    density for ``reward="oracle"``). An unknown name is a ``ValueError`` listing the known ones."""
    dataset = _dataset(name)
    return DenoisingVectorEnv(dataset, num_envs=num_envs, reward=reward, n_steps=n_steps, action_bound=action_bound)


def register_envs() -> list[str]:
    """Registers ``denoise_gym/Denoise-v0`` (any data set: ``dataset=``, any ``reward=``) and
    ``denoise_gym/<name>-v0`` for every toy data set with an exact density (the oracle is
    their default reward) with Gymnasium; returns the ids. ``import denoise_gym`` calls it."""
    ids = []
    targets = {
        "entry_point": "denoise_gym.envs:DenoisingEnv",
        "vector_entry_point": "denoise_gym.envs:DenoisingVectorEnv",
    }
    for env_id, kwargs in [("denoise_gym/Denoise-v0", {})] + [
        (f"denoise_gym/{name}-v0", {"dataset": name}) for name in ORACLE_DATASETS
    ]:
        if env_id not in gym.registry:
            gym.register(id=env_id, kwargs=kwargs, disable_env_checker=False, **targets)
        ids.append(env_id)
    return ids


#: The 2-D toy data sets.
TOY_DATASETS = tuple(_native.toy_dataset_names())


def _has_density(name: str) -> bool:
    try:
        OracleReward(name)
    except ValueError:
        return False
    return True


#: The toy data sets with an exact density, each registered as ``denoise_gym/<name>-v0``
#: (the others need ``reward=``: ``gymnasium.make("denoise_gym/Denoise-v0", dataset=..., reward=...)``).
ORACLE_DATASETS = tuple(name for name in TOY_DATASETS if _has_density(name))
