"""Runs from Python: load_run against dgym sample/energy, the exported sampler against the
Rust one, and train() in-process (Ctrl-C stops at a checkpoint; resuming gives the numbers
of an uninterrupted run)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import denoise_gym as dg


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(c) for c in row] for row in rows[1:]])


def test_load_run_reads_config_metrics_and_summary(gcd_run):
    run = dg.load_run(gcd_run)
    assert run.finished
    assert run.config["run"]["method"] == "diffusion"
    assert run.config["finetune"]["agent"] == "reinforce"
    assert run.config["pretrain"]["iterations"] == 100 and run.config["policy"]["hidden"] == 16
    metrics = run.metrics
    assert (metrics["phase"] == "pretrain").sum() == 10 and (metrics["phase"] == "finetune").sum() == 10
    assert metrics["ebm/energy_pos"].notna().sum() == 10
    summary = run.summary
    assert summary["eval"]["n_samples"] == 200 and {"swd", "mmd2"} <= set(summary["eval"])
    assert "eval_start" in summary


def test_metrics_without_pandas_are_numpy_columns(gcd_run):
    from denoise_gym.runs import _read_metrics

    columns = _read_metrics(Path(gcd_run) / "metrics.csv")
    import pandas as pd

    frame = pd.read_csv(Path(gcd_run) / "metrics.csv")
    assert list(columns) == list(frame.columns)
    np.testing.assert_array_equal(columns["step"], frame["step"].to_numpy())
    np.testing.assert_allclose(columns["ebm/energy_pos"], frame["ebm/energy_pos"].to_numpy(), equal_nan=True)


def test_sample_equals_dgym_sample(gcd_run, dgym, tmp_path):
    out = tmp_path / "samples.csv"
    subprocess.run([dgym, "sample", str(gcd_run), "--n", "300", "--seed", "3", "--out", str(out)], check=True)
    header, expected = read_csv(out)
    assert header == ["x0", "x1"]
    got = dg.load_run(gcd_run).sample(300, seed=3)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert not np.array_equal(got, dg.load_run(gcd_run).sample(300, seed=4))


def test_energy_equals_dgym_energy(gcd_run, dgym, tmp_path):
    points = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", header="a,b", comments="", fmt="%.9g")
    out = tmp_path / "energy.csv"
    subprocess.run(
        [dgym, "energy", str(gcd_run), "--points", str(tmp_path / "points.csv"), "--out", str(out)], check=True
    )
    header, table = read_csv(out)
    assert header == ["a", "b", "energy", "energy_raw"]
    run = dg.load_run(gcd_run)
    np.testing.assert_array_equal(run.energy(points, raw=True).astype(np.float32), table[:, 3].astype(np.float32))
    np.testing.assert_allclose(run.energy(points), table[:, 2], rtol=1e-12)


def numpy_mean(exported: dict, x: np.ndarray, t: int) -> np.ndarray:
    """The policy mean from the exported arrays alone, as a PyTorch port would compute it."""
    h = np.concatenate([x, np.repeat(exported["time_embedding"][t - 1][None], len(x), 0)], 1).astype(np.float64)
    layers = exported["layers"]
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i + 1 < len(layers):
            h = np.maximum(h, 0) if exported["activation"] == "relu" else h / (1 + np.exp(-h))
    eps = h
    ab = exported["alpha_bar"][t - 1]
    x0_hat = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    if exported["clip_x0"] > 0:
        x0_hat = np.clip(x0_hat, -exported["clip_x0"], exported["clip_x0"])
    return exported["posterior_c1"][t - 1] * x0_hat + exported["posterior_c2"][t - 1] * x, eps


def test_exported_sampler_reproduces_the_rust_policy(ddpm_run):
    sampler = dg.load_run(ddpm_run).sampler()
    exported = sampler.export()
    assert exported["n_steps"] == sampler.n_steps == 4 and exported["dim"] == 2
    assert [w.shape for w, _ in exported["layers"]] == [(18, 16), (16, 16), (16, 16), (16, 2)]
    np.testing.assert_array_equal(exported["sigmas"], sampler.sigmas)
    x = np.random.default_rng(1).normal(size=(64, 2)).astype(np.float32)
    for t in range(1, 5):
        mean, eps = numpy_mean(exported, x, t)
        np.testing.assert_allclose(sampler.predict_eps(x, t), eps, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sampler.mean(x, t), mean, rtol=1e-4, atol=1e-5)
    # log π of the Gaussian step, in closed form.
    action = x * 0.5
    sigma = exported["sigmas"][1].astype(np.float64)
    mean, _ = numpy_mean(exported, x, 2)
    expected = -((action - mean) ** 2).sum(1) / (2 * sigma**2) - 2 * np.log(sigma) - np.log(2 * np.pi)
    np.testing.assert_allclose(sampler.log_prob(x, 2, action), expected, rtol=1e-4, atol=1e-4)


TRAIN_SCRIPT = """
import sys, denoise_gym as dg
settings = dict(TINY, **{"pretrain.iterations": 20000, "pretrain.checkpoint_every": 100, "finetune.iterations": 0})
dg.train("ddpm-8gaussians", out=sys.argv[1], set=settings, resume=len(sys.argv) > 2)
"""


def test_ctrl_c_stops_at_a_checkpoint_and_resume_gives_the_uninterrupted_numbers(tmp_path):
    from conftest import TINY

    script = f"TINY = {TINY!r}\n" + TRAIN_SCRIPT
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    child = subprocess.Popen([sys.executable, "-c", script, str(interrupted)], stderr=subprocess.PIPE, text=True)
    metrics = interrupted / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 200):
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert "KeyboardInterrupt" in stderr, stderr
    assert not (interrupted / "summary.json").exists()
    assert list((interrupted / "checkpoints").iterdir())
    subprocess.run([sys.executable, "-c", script, str(interrupted), "resume"], check=True)
    subprocess.run([sys.executable, "-c", script, str(whole)], check=True)
    resumed = dg.load_run(interrupted).metrics
    uninterrupted = dg.load_run(whole).metrics
    assert len(resumed) == len(uninterrupted)
    np.testing.assert_array_equal(resumed["step"], uninterrupted["step"])
    np.testing.assert_array_equal(resumed["dsm/loss"].to_numpy(), uninterrupted["dsm/loss"].to_numpy())
    np.testing.assert_array_equal(dg.load_run(interrupted).sample(100), dg.load_run(whole).sample(100))


def test_evaluate_scores_data_far_better_than_noise():
    data = dg.Dataset("8gaussians")
    good = dg.evaluate(data.sample(2000, seed=1), "8gaussians", seed=0)
    bad = dg.evaluate(np.random.default_rng(0).normal(size=(2000, 2)), data, seed=0)
    assert good["modes_covered"] == 8 and good["off_mode_fraction"] < 0.05
    assert good["swd"] < 0.1 * bad["swd"] and good["mmd2"] < 0.1 * bad["mmd2"]
    assert good == dg.evaluate(data.sample(2000, seed=1), data, seed=0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        dg.evaluate(np.zeros((1, 2)), data)


def test_a_runs_energy_as_the_reward_needs_no_data_set(gcd_run):
    env = dg.DenoisingEnv(reward=gcd_run)
    obs, _ = env.reset(seed=0)
    assert env.n_steps == 4 and obs.shape == (3,)
    for _ in range(4):
        obs, reward, terminated, *_ = env.step(obs[:-1])
    assert terminated
    assert reward == pytest.approx(-float(dg.load_run(gcd_run).energy(obs[None, :-1], raw=True)[0]), rel=1e-6)
    with pytest.raises(ValueError, match="dimension 2, data set 'digits' has 64"):
        dg.DenoisingEnv("digits", reward=gcd_run)


def test_a_standardised_run_samples_and_scores_in_the_data_units_as_dgym_does(digits_run, dgym, tmp_path):
    run = dg.load_run(digits_run)
    stats = run.data_stats
    assert stats is not None and stats["dim"] == 64 and stats["standardizer"] is not None
    out = tmp_path / "samples.csv"
    subprocess.run([dgym, "sample", str(digits_run), "--n", "200", "--seed", "1", "--out", str(out)], check=True)
    _, expected = read_csv(out)
    got = run.sample(200, seed=1)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    # The sampler itself draws in the standardised space: not the data's units.
    assert not np.allclose(run.sampler().sample(200, 1), got)
    points = got[:40]
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", fmt="%.9g")
    energies = tmp_path / "energy.csv"
    subprocess.run(
        [dgym, "energy", str(digits_run), "--points", str(tmp_path / "points.csv"), "--out", str(energies)],
        check=True,
    )
    _, table = read_csv(energies)
    np.testing.assert_array_equal(run.energy(points, raw=True).astype(np.float32), table[:, -1].astype(np.float32))
    with pytest.raises(ValueError, match="64"):
        run.energy(points[:, :10])
