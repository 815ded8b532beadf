"""Shared fixtures: tiny runs trained once per session through ``denoise_gym.train``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import denoise_gym as dg

#: A GCD run in seconds: every setting that sizes work made small, nothing else changed.
TINY = {
    "pretrain.iterations": 100,
    "pretrain.ema_decay": 0.9,
    "finetune.iterations": 10,
    "policy.hidden": 16,
    "reward.hidden": 16,
    "reward.grid_size": 32,
    "reward.held_out": 200,
    "eval.n_samples": 200,
    "eval.swd_directions": 50,
    "run.quiet": True,
}


@pytest.fixture(scope="session")
def gcd_run(tmp_path_factory) -> Path:
    """A finished tiny gcd-8gaussians run (an EBM and a fine-tuned Gaussian policy)."""
    out = tmp_path_factory.mktemp("runs") / "gcd"
    dg.train("gcd-8gaussians", out=out, set=TINY)
    return out


@pytest.fixture(scope="session")
def ddpm_run(tmp_path_factory) -> Path:
    """A finished tiny DSM-only run (a sampler, no EBM)."""
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    dg.train("ddpm-8gaussians", out=out, set={k: v for k, v in TINY.items() if not k.startswith(("finetune", "reward"))})
    return out


@pytest.fixture(scope="session")
def dgym() -> str:
    """The ``dgym`` binary (``$DGYM``, else on PATH, else target/release or target/debug)."""
    candidates = [os.environ.get("DGYM"), shutil.which("dgym")]
    root = Path(__file__).resolve().parents[2]
    candidates += [str(root / "target" / "release" / "dgym"), str(root / "target" / "debug" / "dgym")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    if os.environ.get("CI"):
        pytest.fail("CI sets $DGYM: the comparison with dgym must run there")
    pytest.skip("no dgym binary (build it, or set $DGYM)")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A finished tiny GCD run on the digits, split and standardised (data_stats.json)."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    sets = dict(TINY)
    sets.update(
        {
            "data.dataset": "digits",
            "data.validation_fraction": 0.15,
            "data.test_fraction": 0.15,
            "data.standardize": True,
            "data.min_std": 0.1,
            "policy.clip_x0": 4.0,
        }
    )
    dg.train("gcd-8gaussians", out=out, set=sets)
    return out
