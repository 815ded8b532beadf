"""denoise-gym from Python: a diffusion model's sampler as an RL policy and an energy-based
model as a reward learned from data.

- Gymnasium environments over the Rust denoising environment: ``DenoisingEnv`` (one
  episode), ``DenoisingVectorEnv`` / ``make_vec`` (a native vector environment), registered
  as ``denoise_gym/Denoise-v0`` and ``denoise_gym/<data set>-v0``.
- Rewards: ``OracleReward`` (exact log-density), ``EnergyReward`` (GCD/DxMI's EBM, trainable
  with ``update``), any callable; the agents' running costs (``Sampler.running_costs``).
- Runs: ``load_run`` (config, metrics, summary, ``sample``, ``energy``), the sampler's weights
  as numpy (``Sampler.export``), and ``train`` (``dgym train`` in-process).

Every number comes from the Rust library; see ``docs/python.md`` in the repository.
"""

from ._native import (
    Dataset,
    DenoiseGymError,
    EnergyReward,
    NativeVecEnv,
    OracleReward,
    RunningCosts,
    Sampler,
)
from ._native import dataset_names as _dataset_names
from .envs import (
    DEFAULT_N_STEPS,
    DenoisingEnv,
    DenoisingVectorEnv,
    RewardCallableError,
    RewardSpec,
    make_vec,
    register_envs,
)
from .runs import Run, load_run, shipped_configs, train

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DenoiseGymError",
    "EnergyReward",
    "NativeVecEnv",
    "OracleReward",
    "RunningCosts",
    "Sampler",
    "DEFAULT_N_STEPS",
    "DenoisingEnv",
    "DenoisingVectorEnv",
    "RewardCallableError",
    "RewardSpec",
    "make_vec",
    "register_envs",
    "Run",
    "load_run",
    "shipped_configs",
    "train",
    "dataset_names",
    "ENV_IDS",
]


def dataset_names() -> list[str]:
    """The names of the built-in data sets (``Dataset(name)``, ``make_vec(name, ...)``)."""
    return list(_dataset_names())


#: The Gymnasium ids this package registers on import.
ENV_IDS = register_envs()
