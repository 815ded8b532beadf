"""Runs from Python: read a run directory ``dgym train`` (or ``train`` here) wrote, and train
a config in-process.

A run directory holds ``config.toml`` (the resolved config), ``metrics.csv`` (one row per
logged step: ``step``, ``phase`` and one column per scalar), ``summary.json`` (once the run
finished) and its checkpoints; the sampler and the EBM are rebuilt from the newest
verified checkpoint by the Rust code that ``dgym sample`` and ``dgym energy`` run.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from . import _native
from ._native import EnergyReward, Sampler

__all__ = ["Run", "load_run", "train", "shipped_configs"]

PathLike = Union[str, "os.PathLike[str]"]


def shipped_configs() -> dict[str, str]:
    """The configs shipped with denoise-gym (``experiments/configs/``): name → TOML text."""
    return dict(_native.shipped_configs())


class Run:
    """A run directory. Use ``load_run(path)``."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory {str(self.path)!r} does not exist")
        if not (self.path / "config.toml").is_file():
            raise FileNotFoundError(f"{self.path}: no config.toml: not a run directory of denoise-gym")
        #: The resolved config (every section, every key, old keys migrated), as a dict.
        self.config: dict[str, Any] = json.loads(_native.run_config_json(self.path))
        self._sampler: Optional[Sampler] = None
        self._energy: Optional[EnergyReward] = None

    @property
    def summary(self) -> Optional[dict[str, Any]]:
        """``summary.json`` (the final metrics), or None while the run has not finished."""
        path = self.path / "summary.json"
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    @property
    def finished(self) -> bool:
        """Whether the run wrote ``summary.json``."""
        return (self.path / "summary.json").is_file()

    @property
    def metrics(self) -> Any:
        """``metrics.csv``: a pandas DataFrame when pandas is installed, else a dict of numpy
        arrays by column (``phase`` as strings, empty cells as NaN)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the run has logged no metrics yet")
        try:
            import pandas as pd
        except ImportError:
            return _read_metrics(path)
        return pd.read_csv(path)

    def sampler(self) -> Sampler:
        """The run's final sampler (``Sampler``), loaded once."""
        if self._sampler is None:
            self._sampler = Sampler.from_run(self.path)
        return self._sampler

    def energy_model(self) -> EnergyReward:
        """The run's EBM (``EnergyReward``), loaded once; a run without one raises."""
        if self._energy is None:
            self._energy = EnergyReward.from_run(self.path)
        return self._energy

    @property
    def data_stats(self) -> Optional[dict[str, Any]]:
        """``data_stats.json`` of a run on a table (splits, classes, the train split's
        standardisation), or None."""
        path = self.path / "data_stats.json"
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _standardizer(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        stats = self.data_stats
        if stats is None or stats.get("standardizer") is None:
            return None
        s = stats["standardizer"]
        return np.asarray(s["mean"], dtype=np.float64), np.asarray(s["scale"], dtype=np.float64)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` samples, ``n × d`` float32, in the data's own units: what ``dgym sample RUN
        --n n --seed seed`` writes (``Sampler.sample`` draws in the model's space, standardised
        when the run standardised its data)."""
        samples = self.sampler().sample(n, seed)
        standardizer = self._standardizer()
        if standardizer is None:
            return samples
        mean, scale = standardizer
        return (samples.astype(np.float64) * scale + mean).astype(np.float32)

    def energy(self, points: Any, raw: bool = False) -> np.ndarray:
        """The EBM's energy at each row of ``points`` (in the data's own units), float64:
        calibrated ``E/T_E`` (so that ``p ∝ exp(-energy)``), or raw ``E`` with ``raw=True``:
        ``dgym energy``'s columns ``energy`` and ``energy_raw``."""
        model = self.energy_model()
        standardizer = self._standardizer()
        if standardizer is not None:
            mean, scale = standardizer
            values = np.asarray(points, dtype=np.float32).astype(np.float64)
            if values.ndim != 2 or values.shape[1] != mean.shape[0]:
                raise ValueError(
                    f"points: expected an n × {mean.shape[0]} array (the run's data width), "
                    f"got shape {values.shape}"
                )
            points = ((values - mean) / scale).astype(np.float32)
        energies = model.energy(points).astype(np.float64)
        return energies if raw else energies / model.temperature

    def __repr__(self) -> str:
        method = self.config.get("run", {}).get("method", "?")
        return f"Run({str(self.path)!r}, method={method!r}, finished={self.finished})"


def _read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cells = [row[j] if j < len(row) else "" for row in body]
        if name == "phase":
            columns[name] = np.array(cells, dtype=str)
        elif name == "step":
            columns[name] = np.array([int(c) for c in cells], dtype=np.int64)
        else:
            columns[name] = np.array([float(c) if c != "" else np.nan for c in cells], dtype=np.float64)
    return columns


def load_run(path: PathLike) -> Run:
    """The run in ``path``: its ``config`` (dict), ``metrics``, ``summary``, ``sample(n, seed)``
    and ``energy(points)``. A missing directory is a ``FileNotFoundError``."""
    return Run(path)


def _override(key: str, value: Any) -> str:
    """``section.key=value`` with the value in TOML (strings quoted, lists as arrays)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, np.integer, np.floating)):
        text = repr(value.item() if isinstance(value, np.generic) else value)
    else:
        text = json.dumps(value)
    return f"{key}={text}"


def train(
    config: Union[PathLike, Mapping[str, Any]],
    out: Optional[PathLike] = None,
    set: Optional[Mapping[str, Any]] = None,
    resume: bool = False,
) -> Run:
    """Trains ``config`` in this process, writing the run directory ``dgym train`` writes, and
    returns it as a ``Run``.

    ``config`` is a TOML file, the name of a shipped config (``"gcd-8gaussians"``), or a dict
    of sections (``{"run": {"seed": 1}, "data": {...}}``); ``set`` holds overrides as
    ``{"section.key": value}`` (``dgym train --set``); ``out`` defaults to
    ``runs/<config name>``. With ``resume=True`` the run in ``out`` continues from its last
    checkpoint (``config`` is ignored). The GIL is released while it trains; Ctrl-C stops it
    at the next iteration, with a checkpoint written, and raises ``KeyboardInterrupt``
    (continue with ``train(..., out=same, resume=True)``).
    """
    overrides = [_override(k, v) for k, v in (set or {}).items()]
    if isinstance(config, Mapping):
        text, source, name = _dict_to_toml(config), "<dict config>", "run"
    else:
        path = Path(config)
        shipped = shipped_configs()
        if path.is_file():
            text, source, name = path.read_text(encoding="utf-8"), str(path), path.stem
        elif str(config) in shipped:
            text, source, name = shipped[str(config)], f"<shipped config {config}>", str(config)
        else:
            raise FileNotFoundError(
                f"config {str(config)!r}: no such file, and not a shipped config ({', '.join(sorted(shipped))})"
            )
    out_dir = Path(out) if out is not None else Path("runs") / name
    if resume and not out_dir.is_dir():
        raise FileNotFoundError(f"resume: run directory {str(out_dir)!r} does not exist")
    _native.train_config(text, source, out_dir, overrides, resume)
    return Run(out_dir)


def _dict_to_toml(config: Mapping[str, Any]) -> str:
    lines = []
    for section, keys in config.items():
        if not isinstance(keys, Mapping):
            raise TypeError(f"config[{section!r}] must be a dict of keys (a TOML section), got {type(keys).__name__}")
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(_override(key, value).replace("=", " = ", 1))
    return "\n".join(lines) + "\n"
