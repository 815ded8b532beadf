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
from ._native import evaluate_samples as _evaluate_samples
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
    "evaluate",
    "ENV_IDS",
]


def dataset_names() -> list[str]:
    """The names of the built-in data sets (``Dataset(name)``, ``make_vec(name, ...)``)."""
    return list(_dataset_names())


def evaluate(samples, dataset, seed: int = 0, swd_directions: int = 1000) -> dict[str, float]:
    """``dgym eval``'s sample metrics of ``samples`` (``n × d``) against ``n`` fresh points of
    ``dataset`` (a ``Dataset`` or a name): ``swd``, ``mmd2``, ``mmd2_median`` and, for
    mixtures, ``off_mode_fraction``, ``modes_covered``, ``mode_weight_tv`` and the mode weights."""
    if isinstance(dataset, str):
        dataset = Dataset(dataset)
    return dict(_evaluate_samples(samples, dataset, seed, swd_directions))


#: The Gymnasium ids this package registers on import.
ENV_IDS = register_envs()
