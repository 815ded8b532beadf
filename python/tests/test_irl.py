"""Inverse RL from Python: the EBM's update against a numpy transcription of the math, the
running costs in closed form, a learning reward inside the environment, and a numpy-only
policy gradient against the oracle that raises the mean return."""

from __future__ import annotations

import numpy as np
import pytest

import denoise_gym as dg


def forward(params: dict, x: np.ndarray):
    """The energy MLP (ReLU) in float64, keeping what the backward pass needs."""
    n_layers = len(params) // 2
    hs, h = [x], x
    for i in range(n_layers):
        h = h @ params[f"net.layers.{i}.weight"] + params[f"net.layers.{i}.bias"]
        if i + 1 < n_layers:
            h = np.maximum(h, 0)
        hs.append(h)
    return hs


def contrastive_gradients(params: dict, pos: np.ndarray, neg: np.ndarray, gamma: float):
    """L_E = mean E(x+) − mean E(x−) + γ (mean E(x+)² + mean E(x−)²) and its gradients."""
    x = np.concatenate([pos, neg])
    hs = forward(params, x)
    energy = hs[-1][:, 0]
    n_pos, n_neg = len(pos), len(neg)
    linear = np.concatenate([np.full(n_pos, 1 / n_pos), np.full(n_neg, -1 / n_neg)])
    quadratic = np.concatenate([np.full(n_pos, gamma / n_pos), np.full(n_neg, gamma / n_neg)])
    loss = (linear * energy + quadratic * energy**2).sum()
    grad = (linear + 2 * quadratic * energy)[:, None]
    n_layers = len(params) // 2
    grads = {}
    for i in reversed(range(n_layers)):
        grads[f"net.layers.{i}.weight"] = hs[i].T @ grad
        grads[f"net.layers.{i}.bias"] = grad.sum(0, keepdims=True)
        if i > 0:
            grad = (grad @ params[f"net.layers.{i}.weight"].T) * (hs[i] > 0)
    return loss, energy, grads


def test_update_from_python_is_the_contrastive_adam_step():
    lr, gamma, betas = 1e-3, 0.5, (0.9, 0.999)
    reward = dg.EnergyReward(2, seed=3, hidden=8, depth=2, lr=lr, gamma=gamma)
    params = {k: v.astype(np.float64) for k, v in reward.parameters().items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        pos = rng.normal(size=(32, 2)).astype(np.float32)
        neg = (rng.normal(size=(24, 2)) * 2).astype(np.float32)
        loss, energy, grads = contrastive_gradients(params, pos.astype(np.float64), neg.astype(np.float64), gamma)
        stats = reward.update(pos, neg)
        assert stats["L_E"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert stats["energy_pos"] == pytest.approx(energy[:32].mean(), rel=1e-5, abs=1e-6)
        assert stats["energy_neg"] == pytest.approx(energy[32:].mean(), rel=1e-5, abs=1e-6)
        assert stats["energy_gap"] == pytest.approx(stats["energy_neg"] - stats["energy_pos"])
        norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
        assert stats["grad_norm"] == pytest.approx(norm, rel=1e-4)
        for k in params:
            m[k] = betas[0] * m[k] + (1 - betas[0]) * grads[k]
            v2[k] = betas[1] * v2[k] + (1 - betas[1]) * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - betas[0] ** step), v2[k] / (1 - betas[1] ** step)
            params[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        for k, value in reward.parameters().items():
            np.testing.assert_allclose(value, params[k], atol=2e-6, err_msg=f"{k} after update {step}")
    assert reward.iteration == 3
    points = rng.normal(size=(10, 2))
    np.testing.assert_allclose(reward.energy(points), forward(params, points)[-1][:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(reward(points), -reward.energy(points))


def test_the_environment_scores_with_the_reward_as_it_learns():
    reward = dg.EnergyReward(2, seed=0)
    venv = dg.make_vec("8gaussians", num_envs=16, reward=reward)
    data = dg.Dataset("8gaussians")

    def episode():
        obs = venv.reset(seed=0)[0]
        for _ in range(venv.n_steps):
            obs, rewards, *_ = venv.step(obs[:, :-1])
        return obs[:, :-1], rewards

    x0, before = episode()
    np.testing.assert_allclose(before, reward(x0), rtol=1e-6)
    for i in range(20):
        reward.update(data.sample(64, seed=i), x0)
    _, after = episode()
    np.testing.assert_allclose(after, reward(x0), rtol=1e-6)
    # Data-vs-these-samples learning lowers their reward.
    assert after.mean() < before.mean()


def test_running_costs_in_closed_form(ddpm_run):
    sampler = dg.load_run(ddpm_run).sampler()
    costs = sampler.running_costs(tau_entropy=0.3, tau_velocity=0.2, velocity_scale="fixed", velocity_scale_value=2.0)
    x_t = np.array([[0.0, 0.0], [1.0, 1.0]])
    x_prev = np.array([[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(costs.velocity_reward(x_t, x_prev, 2), [-0.2 * 25 / (2 * 2.0 * 2), 0.0])
    sigmas = np.array([0.5, 1.0, 2.0, 1.5])
    expected = 0.3 * sum(2 * (np.log(s) + 0.5 * np.log(2 * np.pi * np.e)) for s in sigmas)
    assert costs.entropy_bonus(sigmas) == pytest.approx(expected, rel=1e-6)
    adaptive = sampler.running_costs(velocity_scale="adaptive")
    start = adaptive.velocity_scales.copy()
    lengths = np.full((4, 8), 2.0 * 2)  # ‖Δx‖² = 4 per sample: mean over d = 2 is 2
    adaptive.observe(lengths)
    np.testing.assert_allclose(adaptive.velocity_scales, 0.99 * start + 0.01 * 2.0)
    with pytest.raises(ValueError, match="one per step"):
        adaptive.observe(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="not a step"):
        costs.velocity_reward(x_t, x_prev, 5)


def test_numpy_policy_gradient_against_the_oracle_raises_the_mean_return():
    """REINFORCE in numpy on a per-step linear Gaussian policy x_{t-1} = a_t x_t + σ_t ε.

    It starts far too narrow (x_0 has variance ≈ 0.12, mean log-density ≈ -24); the best
    isotropic Gaussian (variance ≈ 3) scores ≈ -9.8, so the return has room to rise."""
    n, T = 256, 4
    venv = dg.make_vec("8gaussians", num_envs=n, n_steps=T)
    log_a = np.full(T, np.log(0.5))
    log_sigma = np.full(T, np.log(0.3))
    rng = np.random.default_rng(0)
    returns = []
    for iteration in range(60):
        obs = venv.reset(seed=iteration * n)[0]
        score_a, score_s = np.zeros((n, T)), np.zeros((n, T))
        for k in range(T):
            x, a, s = obs[:, :-1].astype(np.float64), np.exp(log_a[k]), np.exp(log_sigma[k])
            noise = rng.normal(size=x.shape)
            action = a * x + s * noise
            # ∂ log π / ∂ log a and ∂ log π / ∂ log σ of the Gaussian step.
            score_a[:, k] = ((action - a * x) * a * x).sum(1) / s**2
            score_s[:, k] = (noise**2).sum(1) - 2
            obs, rewards, terminated, *_ = venv.step(action.astype(np.float32))
        assert terminated.all()
        returns.append(rewards.mean())
        advantage = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        log_a += 0.05 * (advantage[:, None] * score_a).mean(0)
        log_sigma += 0.05 * (advantage[:, None] * score_s).mean(0)
    first, last = np.mean(returns[:5]), np.mean(returns[-5:])
    assert first < -20 and last > -12, (first, last)
