"""Type stubs of ``denoise_gym._native``, the Rust extension (PyO3). Arrays are numpy;
inputs may be any array-like of numbers (converted to float32), outputs are float32 unless
said otherwise."""

from os import PathLike
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]
_Points = npt.ArrayLike
_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

class DenoiseGymError(Exception):
    """An error of the Rust code that is neither a bad value (ValueError) nor a missing
    file (FileNotFoundError): a corrupt checkpoint, a failed write, a non-finite loss."""

class Dataset:
    """A built-in data set: ``Dataset("8gaussians")``, or any ``[data]`` keys:
    ``Dataset("csv", path="points.csv")``."""

    def __init__(self, name: str, **keys: Any) -> None:
        """The data set ``name`` as ``[data] dataset = name`` (and ``keys``) would build it."""
    @property
    def name(self) -> str:
        """The data set's name."""
    @property
    def dim(self) -> int:
        """The dimension d of a point."""
    def sample(self, n: int, seed: int = 0) -> _F32:
        """``n`` fresh points, ``n × d``; ``seed`` fixes them."""
    def log_density(self, points: _Points) -> _F64:
        """The exact log-density per row (Gaussian mixtures only; ValueError otherwise)."""

class OracleReward:
    """The exact log-density of a mixture as the reward, ``r(x_0) = log p(x_0)``."""

    def __init__(self, dataset: Union[str, Dataset]) -> None:
        """``dataset`` must have an exact density (ValueError otherwise)."""
    @property
    def dataset(self) -> Dataset:
        """The data set whose density this is."""
    @property
    def dim(self) -> int:
        """The dimension d."""
    def __call__(self, points: _Points) -> _F32:
        """``log p(x)`` per row."""

class EnergyReward:
    """GCD/DxMI's EBM reward ``r(x) = -E_φ(x)``, trainable from Python by the contrastive
    update ``L_E = mean E(x⁺) − mean E(x⁻) + γ (mean E(x⁺)² + mean E(x⁻)²)`` with Adam.
    Thread-safe; an environment built with it scores with its current weights."""

    def __init__(self, dim: int, seed: int = 0, **reward_keys: Any) -> None:
        """A fresh energy network initialised as ``dgym train`` would with ``run.seed = seed``;
        ``reward_keys`` are ``[reward]`` keys (hidden, depth, activation, gamma, lr, betas,
        grad_clip)."""
    @staticmethod
    def from_run(path: _Path) -> "EnergyReward":
        """The EBM of a GCD/DxMI run (or ``-D(x, 0)`` of a DDAEBM run) with its temperature;
        a run without one raises DenoiseGymError, a missing one FileNotFoundError."""
    @property
    def dim(self) -> int:
        """The dimension d."""
    @property
    def temperature(self) -> float:
        """The calibration temperature ``T_E`` (1 until a run fitted it)."""
    @property
    def iteration(self) -> int:
        """The number of updates made through this object."""
    def energy(self, points: _Points) -> _F32:
        """Raw energies ``E_φ(x)`` per row."""
    def __call__(self, points: _Points) -> _F32:
        """The reward ``-E_φ(x)`` per row."""
    def update(self, positive: _Points, negative: _Points) -> dict[str, float]:
        """One contrastive Adam step on data ``positive`` against samples ``negative``;
        returns ``energy_pos``, ``energy_neg``, ``energy_gap``, ``L_E`` and ``grad_norm`` of
        the model before the step."""
    def parameters(self) -> dict[str, _F32]:
        """The network's parameters by name (``W: in × out``, ``b: 1 × out``, ``y = x W + b``)."""

class RunningCosts:
    """The running costs of the entropy-regularised return: the velocity reward
    ``-τ_v ‖x_t − x_{t-1}‖² / (2 s_t² d)`` per step and the entropy bonus
    ``τ_H Σ_t d (log σ_t + ½ log 2πe)``. Made by ``Sampler.running_costs``."""

    @property
    def tau_entropy(self) -> float:
        """``τ_H``."""
    @property
    def tau_velocity(self) -> float:
        """``τ_v``."""
    @property
    def velocity_scales(self) -> _F64:
        """``s_t²`` for ``t = 1..T`` (index ``t - 1``)."""
    def velocity_reward(self, x_t: _Points, x_prev: _Points, t: int) -> _F64:
        """The velocity reward of the step ``x_t → x_{t-1}`` per row."""
    def entropy_bonus(self, sigmas: npt.ArrayLike) -> float:
        """``τ_H Σ_t H_t`` for ``σ_1..σ_T``."""
    def observe(self, squared_lengths: _Points) -> None:
        """Moves adaptive ``s_t²`` toward a rollout's step lengths (``T × n``, row k the step
        from ``t = T − k``); fixed scales ignore it."""

class Sampler:
    """A run's final sampler (EMA weights where kept): a Gaussian policy or DDAEBM's
    latent generator."""

    @staticmethod
    def from_run(path: _Path) -> "Sampler":
        """The sampler of the run in ``path``."""
    @property
    def kind(self) -> str:
        """``"gaussian"`` or ``"ddaebm"``."""
    @property
    def dim(self) -> int:
        """The data dimension d."""
    @property
    def n_steps(self) -> int:
        """T (Gaussian policies)."""
    @property
    def sigmas(self) -> _F32:
        """``σ_1..σ_T`` (Gaussian policies)."""
    def sample(self, n: int, seed: int = 0) -> _F32:
        """``n`` samples: what ``dgym sample RUN --n n --seed seed`` writes."""
    def predict_eps(self, x: _Points, t: Union[int, Sequence[int]]) -> _F32:
        """``ε_θ(x_t, t)``."""
    def mean(self, x: _Points, t: Union[int, Sequence[int]]) -> _F32:
        """The policy mean ``μ_θ(x_t, t)``."""
    def log_prob(self, x: _Points, t: Union[int, Sequence[int]], action: _Points) -> _F32:
        """``log π(action | x_t, t)`` per row."""
    def running_costs(
        self,
        tau_entropy: float = 0.1,
        tau_velocity: float = 0.01,
        velocity_scale: str = "adaptive",
        velocity_scale_value: float = 1.0,
    ) -> RunningCosts:
        """The running costs of this policy's chain."""
    def export(self) -> dict[str, Any]:
        """The policy as numpy: ``layers`` [(W, b)], ``activation``, ``time_embedding``
        (T × e), ``sigmas``, ``alpha_bar``, ``beta``, ``posterior_c1``, ``posterior_c2``,
        ``clip_x0``, ``fix_last_sigma``, ``dim``, ``n_steps``, the σ floors, ``parameters`` (by name) and, for
        partially frozen policies, ``ft_steps`` and ``frozen_layers``."""

class NativeVecEnv:
    """The Rust environment behind ``DenoisingEnv`` and ``DenoisingVectorEnv`` (use those)."""

    def __init__(
        self,
        dim: int,
        n_steps: int,
        num_envs: int,
        reward: Optional[Union[OracleReward, EnergyReward]] = None,
        seed: int = 0,
    ) -> None:
        """``num_envs`` episodes of ``n_steps`` steps; rewards 0 when ``reward`` is None."""
    @property
    def dim(self) -> int:
        """d."""
    @property
    def n_steps(self) -> int:
        """T."""
    @property
    def num_envs(self) -> int:
        """The number of rows."""
    @property
    def t(self) -> Optional[int]:
        """The current step (None before the first reset)."""
    def reset(self, seed: Optional[int] = None) -> _F32:
        """``x_T`` of every row (row i seeded with ``seed + i``)."""
    def step(self, actions: _Points) -> tuple[_F32, _F32, bool, int]:
        """``(x_{t-1}, reward, terminated, t)``."""

def run_config_json(path: _Path) -> str:
    """The resolved config of a run, as JSON."""

def train_config(
    config_text: str, source: str, out: _Path, overrides: list[str], resume: bool = False
) -> tuple[bool, Optional[int]]:
    """``dgym train`` in-process (use ``denoise_gym.train``): ``(finished, interrupted_at)``."""

def shipped_configs() -> list[tuple[str, str]]:
    """The shipped configs' names and TOML texts."""

def dataset_names() -> list[str]:
    """The built-in data sets' names."""

def evaluate_samples(samples: _Points, dataset: Dataset, seed: int = 0, swd_directions: int = 1000) -> dict[str, float]:
    """SWD, MMD² and mode statistics of ``samples`` against fresh data (use ``denoise_gym.evaluate``)."""

def toy_dataset_names() -> list[str]:
    """The 2-D toy data sets' names (each registered as ``denoise_gym/<name>-v0``)."""
