#!/usr/bin/env python3
"""PyTorch-eager reference of the work `dgym bench` times (bench/README.md).

Every row repeats one training or sampling iteration of the Rust code with the same
shapes, losses, optimiser steps and recomputations, written from docs/algorithms.md and the
Rust sources it mirrors (named at each function). Plain nn.Module / torch ops in eager
mode (--compile: every network through torch.compile), no TorchScript. Numbers are not expected to equal Rust's (other
random number generators, other initial draws); the work is.

    python bench/torch_reference.py [--json OUT] [--quick] [--threads N] [--rows a,b]
                                    [--batches 64,256] [--block-seconds S] [--check]

Timing (as experiments/src/commands/bench.rs `time_iterations`): warm-up iterations that are not
timed (3, or 1 with --quick), one timed iteration that sizes a block to about
--block-seconds (0.3 s), then `repeats` blocks (5, or 2 with --quick) of back-to-back
iterations; a row reports the min and the median over blocks of the seconds per iteration.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys

import torch
from torch import nn

from bench_common import cpu_model, peak_memory_mib, reset_peak_memory, time_iterations

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
HALF_LOG_TWO_PI_E = 0.5 * math.log(2.0 * math.pi * math.e)

ROW_NAMES = ["dsm_step", "sample_t4", "sample_t100", "gcd_reinforce", "gcd_ppo", "dxdp", "ddaebm"]
BATCHES = [64, 256, 1024, 4096]
QUICK_BATCHES = [64, 256]
DDAEBM_REFERENCE_BATCH = 200
DIM = 2
# The data dimension d of the DSM and fine-tuning rows (--dim; DDAEBM and the checks stay 2-D).
DATA = {"dim": DIM}


# ---------------------------------------------------------------------------------------
# Schedule (src/schedule.rs, docs/algorithms.md §1): the vp schedule, beta_min 0.1, beta_max 20.


class Schedule:
    """A T-step vp schedule; host floats (f64) plus float32 lookup tables indexed by t."""

    def __init__(self, n_steps: int, beta_min: float = 0.1, beta_max: float = 20.0):
        self.n_steps = n_steps

        def vp_time(i):
            return i / n_steps * (1.0 - 1e-3) + 1e-3

        def vp_alpha_bar(s):
            return math.exp(-0.5 * s * s * (beta_max - beta_min) - s * beta_min)

        ab = [vp_alpha_bar(vp_time(i)) for i in range(n_steps + 1)]
        self.betas = [min(1.0 - ab[t] / ab[t - 1], 0.999) for t in range(1, n_steps + 1)]
        self.alpha_bars = [1.0]
        for b in self.betas:
            self.alpha_bars.append(self.alpha_bars[-1] * (1.0 - b))
        T = n_steps
        # Tables of length T + 1, index t (index 0 unused where t >= 1 is required).
        beta = [float("nan")] + self.betas
        abar = self.alpha_bars

        def table(f, start=1):
            return torch.tensor([0.0] * start + [f(t) for t in range(start, T + 1)], dtype=torch.float32)

        self.t_alpha_bar = torch.tensor(abar, dtype=torch.float32)
        self.t_sqrt_ab = table(lambda t: math.sqrt(abar[t]), 0)
        self.t_sqrt_one_minus_ab = table(lambda t: math.sqrt(1.0 - abar[t]), 0)
        self.t_inv_sqrt_ab = table(lambda t: 1.0 / math.sqrt(abar[t]))
        self.t_eps_weight = table(lambda t: math.sqrt(1.0 - abar[t]) / math.sqrt(abar[t]))
        self.t_c1 = table(self.posterior_c1)
        self.t_c2 = table(self.posterior_c2)
        self.t_beta = table(lambda t: beta[t])
        self.t_alpha = table(lambda t: 1.0 - beta[t])
        self.t_sqrt_alpha = table(lambda t: math.sqrt(1.0 - beta[t]))
        self.t_sqrt_beta = table(lambda t: math.sqrt(beta[t]))
        self.t_beta_tilde = table(self.beta_tilde)

    def beta(self, t):
        return self.betas[t - 1]

    def alpha(self, t):
        return 1.0 - self.betas[t - 1]

    def posterior_c1(self, t):
        return math.sqrt(self.alpha_bars[t - 1]) * self.beta(t) / (1.0 - self.alpha_bars[t])

    def posterior_c2(self, t):
        return math.sqrt(self.alpha(t)) * (1.0 - self.alpha_bars[t - 1]) / (1.0 - self.alpha_bars[t])

    def beta_tilde(self, t):
        return self.beta(t) * (1.0 - self.alpha_bars[t - 1]) / (1.0 - self.alpha_bars[t])


def per_row(table: torch.Tensor, ts):
    """A coefficient per row: a Python float when the whole batch is at one step `ts`
    (as src/tensor.rs `scale_rows` multiplies by a scalar then), else a `B × 1` column."""
    if isinstance(ts, int):
        return float(table[ts])
    return table[ts].unsqueeze(1)


def steps_tensor(ts, rows: int) -> torch.Tensor:
    if isinstance(ts, int):
        return torch.full((rows,), ts, dtype=torch.long)
    return ts


# ---------------------------------------------------------------------------------------
# Networks (src/nn.rs).

_FREQS = {}


def time_embedding(ts: torch.Tensor, n_steps: int, dim: int) -> torch.Tensor:
    """src/nn.rs `time_embedding`: [sin(τ f_k), cos(τ f_k)], τ = t·1000/T, f_k = 10000^{-k/half},
    computed in f64 per row and call, as the Rust code does, then cast to f32."""
    half = dim // 2
    freqs = _FREQS.get(half)
    if freqs is None:
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        _FREQS[half] = freqs
    tau = ts.to(torch.float64) * (1000.0 / n_steps)
    args = tau.unsqueeze(1) * freqs.unsqueeze(0)
    parts = [torch.sin(args), torch.cos(args)]
    if dim % 2 == 1:
        parts.append(torch.zeros(ts.shape[0], 1, dtype=torch.float64))
    return torch.cat(parts, dim=1).to(torch.float32)


def with_time_embedding(x: torch.Tensor, ts, n_steps: int, dim: int = 16) -> torch.Tensor:
    return torch.cat([x, time_embedding(steps_tensor(ts, x.shape[0]), n_steps, dim)], dim=1)


class Mlp(nn.Module):
    """src/nn.rs `Mlp`: inputs → hidden × depth → outputs, activation between layers.
    nn.Linear's default init is the Rust one (weight and bias uniform in ±1/√in)."""

    def __init__(self, inputs, hidden, depth, outputs, activation):
        super().__init__()
        widths = [inputs] + [hidden] * depth + [outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = {"silu": nn.SiLU(), "relu": nn.ReLU()}[activation]
        if COMPILE["on"]:
            # --compile: what a user reaching for speed does, `torch.compile` on the
            # networks (forward and, through AOTAutograd, backward); the losses, the
            # sampling loop and Adam stay eager Python, as in most training scripts.
            self.forward = torch.compile(self.forward)

    def forward(self, x):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x


def grad_norm_and_clip(params, max_norm: float) -> float:
    """src/optim.rs `clip_grad_norm`: the global norm is always computed (and read back:
    every caller checks it is finite); gradients are scaled by max_norm/(norm + 1e-6) when
    max_norm > 0 and the norm exceeds it. A parameter the loss did not reach has a zero
    gradient in Rust (`gradients_of`); here its .grad is None, which adds 0 to the norm
    and leaves Adam to skip it (the Rust Adam step on a zero gradient only decays the
    moments; every parameter is reached in these rows except the frozen σ_1 entry, which
    is part of the log σ row and gets a zero gradient in both)."""
    params = [p for p in params if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
    return float(torch.linalg.vector_norm(norms))


# torch.optim.Adam implementation: PyTorch's CPU default is the per-tensor loop
# ("single"); --adam foreach / fused select the multi-tensor and fused kernels.
ADAM_KW = {}
#: Set by --compile: every Mlp's forward goes through torch.compile.
COMPILE = {"on": False}
# Denoising steps T of the DSM and fine-tuning rows (--n-steps; dgym bench --set policy.n_steps=T).
N_STEPS = {"value": 4}


def adam(params, lr, betas=(0.9, 0.999)):
    """src/optim.rs `Adam` (bias corrections folded into lr and eps there: the same update).
    `params` may be a list of tensors or of parameter groups (each with its own lr)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, **ADAM_KW)


def check_finite(name: str, value: float) -> float:
    """`ensure_finite`: every loss and grad norm is read back and checked."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} is not finite: {value}")
    return value


# ---------------------------------------------------------------------------------------
# Data (envs/src/data.rs, docs/algorithms.md §6): fresh samples every call.


class GaussianMixture:
    def __init__(self, means, std):
        self.means = torch.tensor(means, dtype=torch.float32)
        self.std = std

    def sample(self, n: int) -> torch.Tensor:
        k = torch.randint(0, self.means.shape[0], (n,))
        return self.means[k] + self.std * torch.randn(n, self.means.shape[1])


def eight_gaussians() -> GaussianMixture:
    s = 1.0 / math.sqrt(2.0)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
    return GaussianMixture([[4.0 * x / 1.414, 4.0 * y / 1.414] for x, y in unit], 0.5 / 1.414)


def sphere_mixture(dim: int, n_components: int = 8, scale: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """`dgym`'s `gmm` data set: equally weighted Gaussians centred on the sphere of radius
    `scale` (torch's generator draws the centres, so they differ from dgym's; the timing
    does not depend on them)."""
    v = torch.randn(n_components, dim, generator=torch.Generator().manual_seed(0))
    return GaussianMixture((scale * v / v.norm(dim=1, keepdim=True)).tolist(), std)


def training_data() -> GaussianMixture:
    """The data of the DSM and fine-tuning rows: 8 Gaussians in 2-D, else `sphere_mixture`."""
    return eight_gaussians() if DATA["dim"] == 2 else sphere_mixture(DATA["dim"])


def twenty_five_gaussians() -> GaussianMixture:
    means = [[2.0 * i / 2.828, 2.0 * j / 2.828] for i in range(-2, 3) for j in range(-2, 3)]
    return GaussianMixture(means, 0.1 / 2.828)


# ---------------------------------------------------------------------------------------
# The Gaussian policy (src/policy.rs, docs/algorithms.md §2).


class GaussianPolicy(nn.Module):
    def __init__(self, schedule: Schedule, dim=None, hidden=128, depth=3, time_embed_dim=16,
                 activation="silu", fix_last_sigma=True):
        super().__init__()
        dim = DATA["dim"] if dim is None else dim
        self.schedule = schedule
        self.dim = dim
        self.time_embed_dim = time_embed_dim
        T = schedule.n_steps
        self.eps_net = Mlp(dim + time_embed_dim, hidden, depth, dim, activation)
        initial = [0.5 * math.log(schedule.beta(1) if t == 1 else schedule.beta_tilde(t))
                   for t in range(1, T + 1)]
        frozen_log_sigma = math.log(max(math.sqrt(schedule.beta(1)), 1e-3))
        initial[0] = frozen_log_sigma
        mask = [1.0] * T
        frozen = [0.0] * T
        if fix_last_sigma:
            mask[0] = 0.0
            frozen[0] = frozen_log_sigma
        # One learnable 1 × T row (column t-1 is step t); σ_1 frozen through the mask, as
        # the Rust policy does: the parameter still gets a (zero) gradient in that entry.
        self.log_sigma = nn.Parameter(torch.tensor(initial, dtype=torch.float32))
        self.register_buffer("sigma_mask", torch.tensor(mask))
        self.register_buffer("sigma_frozen", torch.tensor(frozen))

    @property
    def n_steps(self):
        return self.schedule.n_steps

    def log_sigma_row(self):
        return self.log_sigma * self.sigma_mask + self.sigma_frozen

    def sigmas(self):
        with torch.no_grad():
            return torch.exp(self.log_sigma_row()).tolist()

    def predict_eps(self, x_t, ts):
        return self.eps_net(with_time_embedding(x_t, ts, self.n_steps, self.time_embed_dim))

    def mean(self, x_t, ts):
        s = self.schedule
        eps = self.predict_eps(x_t, ts)
        x0_hat = x_t * per_row(s.t_inv_sqrt_ab, ts) - eps * per_row(s.t_eps_weight, ts)
        return x0_hat * per_row(s.t_c1, ts) + x_t * per_row(s.t_c2, ts)

    def log_sigma_at(self, ts):
        return self.log_sigma_row()[ts - 1]

    def log_prob(self, x_t, ts, action):
        return self.log_prob_of_mean(self.mean(x_t, ts), ts, action)

    def log_prob_of_mean(self, mean, ts, action):
        d = self.dim
        squared = (mean - action).square().sum(dim=1)
        log_sigma = self.log_sigma_at(ts)
        inverse_variance = torch.exp(log_sigma * -2.0)  # traced, as in Rust
        return squared * inverse_variance * -0.5 - log_sigma * d - d * HALF_LOG_TWO_PI

    def entropy_sum(self):
        d = self.dim
        return self.log_sigma_row().sum() * d + d * self.n_steps * (HALF_LOG_TWO_PI + 0.5)

    def sample_step(self, x_t, t: int, noise):
        return self.sample_from_mean(self.mean(x_t, t), t, noise)

    def sample_from_mean(self, mean, t: int, noise):
        sigma = self.sigmas()[t - 1]
        return mean.detach() + noise * sigma

    def sample(self, n: int):
        """`sample_trajectory` + pop: x_T ~ N(0, I), T ancestral steps."""
        states = [torch.randn(n, self.dim)]
        for t in range(self.n_steps, 0, -1):
            noise = torch.randn(n, self.dim)
            states.append(self.sample_step(states[-1], t, noise))
        return states[-1]


# ---------------------------------------------------------------------------------------
# DSM pretraining (src/dsm.rs `DsmPhase::train_step`).


class PretrainState:
    def __init__(self, schedule, batch, lr=1e-3, betas=(0.9, 0.999), grad_clip=0.0, ema_decay=0.999):
        self.policy = GaussianPolicy(schedule)
        self.params = list(self.policy.eps_net.parameters())
        # Adam over the ε-network only (log σ is not trained by DSM).
        self.optimizer = adam(self.params, lr, betas)
        self.ema = [p.detach().clone() for p in self.params] if ema_decay > 0 else None
        self.ema_decay = ema_decay
        self.grad_clip = grad_clip
        self.batch = batch
        self.data = training_data()

    def step(self):
        s = self.policy.schedule
        B = self.batch
        x0 = self.data.sample(B)
        ts = torch.randint(1, s.n_steps + 1, (B,))
        noise = torch.randn(B, self.policy.dim)
        x_t = x0 * per_row(s.t_sqrt_ab, ts) + noise * per_row(s.t_sqrt_one_minus_ab, ts)
        # Rust traces x_t (the tape starts at the input; dfdx then also computes the
        # input's gradient): here only the parameters require grad, see README.
        predicted = self.policy.predict_eps(x_t, ts)
        loss = (predicted - noise).square().sum(dim=1).mean()
        loss_value = check_finite("dsm/loss", loss.item())
        self.optimizer.zero_grad()
        loss.backward()
        check_finite("dsm/grad_norm", grad_norm_and_clip(self.params, self.grad_clip))
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for shadow, p in zip(self.ema, self.params):
                    shadow.lerp_(p, 1.0 - self.ema_decay)
        return loss_value


# ---------------------------------------------------------------------------------------
# The EBM reward and its contrastive learner (src/ebm.rs, docs/algorithms.md §3).


class EnergyModel(nn.Module):
    def __init__(self, dim=None, hidden=128, depth=3, activation="relu"):
        super().__init__()
        dim = DATA["dim"] if dim is None else dim
        self.net = Mlp(dim, hidden, depth, 1, activation)

    def energy(self, x):
        return self.net(x).reshape(-1)

    def reward(self, x0):
        return self.energy(x0) * -1.0


class ContrastiveLearner:
    """`ContrastiveLearner::step`: one forward over [x⁺; x⁻], L_E = Σ_i E_i (a_i + b_i E_i)
    with a = (1/B⁺, −1/B⁻), b = (γ/B⁺, γ/B⁻); Adam lr 1e-3; clip 0 (norm computed)."""

    def __init__(self, ebm: EnergyModel, gamma=1.0, lr=1e-3, betas=(0.9, 0.999), grad_clip=0.0):
        self.ebm = ebm
        self.gamma = gamma
        self.grad_clip = grad_clip
        self.params = list(ebm.parameters())
        self.optimizer = adam(self.params, lr, betas)

    def step(self, positive, negative):
        n_pos, n_neg = positive.shape[0], negative.shape[0]
        linear = torch.cat([torch.full((n_pos,), 1.0 / n_pos), torch.full((n_neg,), -1.0 / n_neg)])
        quadratic = torch.cat([torch.full((n_pos,), self.gamma / n_pos),
                               torch.full((n_neg,), self.gamma / n_neg)])
        energies = self.ebm.energy(torch.cat([positive, negative], dim=0))
        host = energies.detach()
        loss = (energies * linear + energies.square() * quadratic).sum()
        loss_value = check_finite("ebm/loss", loss.item())
        energy_pos = host[:n_pos].mean().item()
        energy_neg = host[n_pos:].mean().item()
        self.optimizer.zero_grad()
        loss.backward()
        check_finite("ebm/grad_norm", grad_norm_and_clip(self.params, self.grad_clip))
        self.optimizer.step()
        return loss_value, energy_pos, energy_neg


# ---------------------------------------------------------------------------------------
# Shared pieces of the score-function agents (src/agent.rs, agents/src/reinforce.rs).


class VelocityScale:
    """`VelocityScale` (adaptive): s_t² starts at β_t, moves with decay 0.99 toward this
    rollout's mean_d (x_{t-1} - x_t)² (host floats in Rust, as here)."""

    def __init__(self, schedule, kind="adaptive"):
        self.kind = kind
        self.decay = 0.99
        self.s2 = [schedule.beta(t) for t in range(1, schedule.n_steps + 1)] if kind == "adaptive" \
            else [1.0] * schedule.n_steps

    def get(self, t):
        return self.s2[t - 1]

    def column(self, ts: torch.Tensor):
        return torch.tensor(self.s2, dtype=torch.float32)[ts - 1]

    def observe(self, squared_lengths: torch.Tensor, batch: int, dim: int):
        if self.kind != "adaptive":
            return
        T = len(self.s2)
        means = (squared_lengths.reshape(T, batch).to(torch.float64).sum(dim=1) / (batch * dim)).tolist()
        for k, mean in enumerate(means):
            t = T - k
            self.s2[t - 1] = self.decay * self.s2[t - 1] + (1.0 - self.decay) * mean


class Rollout:
    """src/rollout.rs: states[k] = x_{T-k}; log_probs[k] for the step states[k] → states[k+1]."""

    def __init__(self, states, log_probs, terminal_reward):
        self.states = states
        self.log_probs = log_probs
        self.terminal_reward = terminal_reward

    @property
    def n_steps(self):
        return len(self.states) - 1

    @property
    def batch_size(self):
        return self.states[0].shape[0]

    def state(self, t):
        return self.states[self.n_steps - t]

    def samples(self):
        return self.state(0)

    def stacked_transitions(self):
        """(x_t rows, x_{t-1} rows, t per row), step-major from t = T down to 1."""
        T, B = self.n_steps, self.batch_size
        current = torch.cat(self.states[:-1], dim=0)
        nxt = torch.cat(self.states[1:], dim=0)
        ts = torch.arange(T, 0, -1).repeat_interleave(B)
        return current, nxt, ts

    def squared_step_lengths(self):
        return torch.cat([(self.states[k + 1] - self.states[k]).square().sum(dim=1)
                          for k in range(self.n_steps)])


def returns_to_go(terminal, squared_lengths, T, B, dim, velocity: VelocityScale, tau_velocity):
    """src/agent.rs `discounted_returns_to_go` with γ = 1: r_t = -τ_v ‖Δx‖²/(2 s_t² d);
    G_t = -E(x_0) + Σ_{t' ≤ t} r_{t'}, step-major (row k is t = T - k)."""
    s2 = torch.tensor([velocity.get(T - k) for k in range(T)], dtype=torch.float64).unsqueeze(1)
    running = -tau_velocity * squared_lengths.reshape(T, B).to(torch.float64) / (2.0 * s2 * dim)
    # G at row k sums the running rewards of rows k..T-1 (steps t..1) and the terminal one.
    tail = torch.flip(torch.cumsum(torch.flip(running, [0]), 0), [0])
    returns = (tail + terminal.to(torch.float64).unsqueeze(0)).to(torch.float32).reshape(-1)
    velocity_cost = float(-running.sum() / B)
    return returns, velocity_cost


class ValueBaseline:
    """agents/src/baselines.rs `ValueBaseline`: b_ψ([x_t, emb(t)]), (d+16) → 128 × 2 → 1 SiLU
    (agent.value_hidden / value_depth defaults), Adam lr 1e-3 default betas, value_steps = 1
    MSE step on all T·B rows, then a no-grad forward of the same rows with the new weights."""

    def __init__(self, dim, n_steps, hidden=128, depth=2, lr=1e-3, steps_per_batch=1):
        self.net = Mlp(dim + 16, hidden, depth, 1, "silu")
        self.optimizer = adam(list(self.net.parameters()), lr)
        self.steps_per_batch = steps_per_batch
        self.n_steps = n_steps
        self.last_loss = float("nan")

    def advantages(self, returns, states, steps):
        inputs = with_time_embedding(states, steps, self.n_steps, 16)
        targets = returns.unsqueeze(1)
        for _ in range(self.steps_per_batch):
            predicted = self.net(inputs)
            loss = (predicted - targets).square().mean()
            self.last_loss = loss.item()
            self.optimizer.zero_grad()
            loss.backward()
            # No clipping and no norm here (Rust: gradients_of then Adam directly).
            self.optimizer.step()
        with torch.no_grad():
            predicted = self.net(inputs).reshape(-1)
        return returns - predicted


def policy_optimizer(policy: GaussianPolicy, lr, lr_log_sigma, betas=(0.9, 0.999)):
    """Two parameter groups (`policy_learning_rates`): the ε-network, then log σ."""
    return adam([
        {"params": list(policy.eps_net.parameters()), "lr": lr},
        {"params": [policy.log_sigma], "lr": lr_log_sigma},
    ], lr, betas)


def mean_std(values: torch.Tensor):
    v = values.to(torch.float64)
    return v.mean().item(), v.std(unbiased=False).item() if v.numel() > 0 else 0.0


class Reinforce:
    """agents/src/reinforce.rs, with the gcd-8gaussians.toml settings: baseline value,
    lr 1e-4, lr_log_sigma 1e-3, τ_H = τ_v = 0.1, adaptive s_t², grad clip 1.0, no advantage
    normalisation or clipping, all T steps fine-tuned, γ_denoising 1."""

    name = "reinforce"

    def __init__(self, policy: GaussianPolicy, lr=1e-4, lr_log_sigma=1e-3, tau_entropy=0.1,
                 tau_velocity=0.1, grad_clip=1.0):
        self.policy = policy
        self.optimizer = policy_optimizer(policy, lr, lr_log_sigma)
        self.params = list(policy.parameters())
        self.baseline = ValueBaseline(policy.dim, policy.n_steps)
        self.velocity = VelocityScale(policy.schedule)
        self.tau_entropy = tau_entropy
        self.tau_velocity = tau_velocity
        self.grad_clip = grad_clip
        self.recorded = []  # log π of the rollout being collected, with its graph (act)

    def act(self, x, t: int):
        """`Reinforce::act`: sample the policy from a mean computed with its graph, and keep
        log π of the action (with that graph) for the update, which then runs no second
        ε-network forward."""
        if t == self.policy.n_steps:
            self.recorded = []
        noise = torch.randn(x.shape[0], x.shape[1])
        with torch.enable_grad():
            mean = self.policy.mean(x, t)
            nxt = self.policy.sample_from_mean(mean, t, noise)
            self.recorded.append(self.policy.log_prob_of_mean(mean, t, nxt))
        return nxt, None

    def score(self, rollout: Rollout):
        """`Reinforce::score`: returns-to-go, value-baseline advantages (one value step)."""
        T, B, d = rollout.n_steps, rollout.batch_size, self.policy.dim
        states, actions, steps = rollout.stacked_transitions()
        squared_lengths = rollout.squared_step_lengths()
        returns, velocity_cost = returns_to_go(rollout.terminal_reward, squared_lengths, T, B, d,
                                               self.velocity, self.tau_velocity)
        advantages = self.baseline.advantages(returns, states, steps)
        return dict(states=states, actions=actions, steps=steps, advantages=advantages,
                    batch_size=B, squared_lengths=squared_lengths, velocity_cost=velocity_cost)

    def entropy_objective(self):
        return self.policy.entropy_sum() * (self.tau_entropy / self.policy.dim)

    def loss(self, batch):
        # The log-probabilities recorded while acting, as `Reinforce::update` uses them.
        log_prob = torch.cat(self.recorded)
        self.recorded = []
        policy_gradient_term = (log_prob * batch["advantages"]).sum() / batch["batch_size"]
        return -(policy_gradient_term + self.entropy_objective())

    def apply(self, loss):
        self.optimizer.zero_grad()
        loss.backward()
        norm = check_finite("policy/grad_norm", grad_norm_and_clip(self.params, self.grad_clip))
        self.optimizer.step()
        return norm

    def finish_update(self, batch):
        """Adaptive s_t² update and the statistics every score-function agent logs."""
        self.velocity.observe(batch["squared_lengths"], batch["batch_size"], self.policy.dim)
        adv_mean, adv_std = mean_std(batch["advantages"])
        sigmas = self.policy.sigmas()
        entropy = sum(self.policy.dim * (math.log(s) + HALF_LOG_TWO_PI + 0.5) for s in sigmas)
        return dict(entropy=entropy, advantage_mean=adv_mean, advantage_std=adv_std,
                    value_loss=self.baseline.last_loss)

    def update(self, rollout: Rollout):
        batch = self.score(rollout)
        loss = self.loss(batch)
        loss_value = check_finite("policy/loss", loss.item())
        grad_norm = self.apply(loss)
        stats = dict(loss=loss_value, grad_norm=grad_norm)
        stats.update(self.finish_update(batch))
        return stats


class Ppo(Reinforce):
    """agents/src/ppo.rs with ppo-8gaussians.toml: lr 1e-4, lr_log_sigma 1.25e-4, τ_H 0.1,
    τ_v 0.01, ε = 0.2, 4 epochs over shuffled minibatches of `minibatch` (sample, step)
    pairs (the bench sets B·T/2), REINFORCE's score, grad clip and Adam."""

    name = "ppo"

    def __init__(self, policy, minibatch, clip=0.2, epochs=4):
        super().__init__(policy, lr=1e-4, lr_log_sigma=1.25e-4, tau_entropy=0.1, tau_velocity=0.01)
        self.minibatch = minibatch
        self.clip = clip
        self.epochs = epochs

    def act(self, x, t: int):
        """`Ppo::act`: sample, then score the action for log π_old from the same mean."""
        noise = torch.randn(x.shape[0], x.shape[1])
        mean = self.policy.mean(x, t)
        nxt = self.policy.sample_from_mean(mean, t, noise)
        return nxt, self.policy.log_prob_of_mean(mean, t, nxt)

    def update(self, rollout: Rollout):
        batch = self.score(rollout)
        old_log_probs = torch.cat(rollout.log_probs)
        pairs = batch["states"].shape[0]
        minibatch = max(min(self.minibatch, pairs), 1)
        eps = self.clip
        losses, norms, kls, fractions = [], [], [], []
        for _ in range(self.epochs):
            order = torch.randperm(pairs)
            for rows in torch.split(order, minibatch):
                states = batch["states"][rows]
                actions = batch["actions"][rows]
                steps = batch["steps"][rows]
                advantage = batch["advantages"][rows]
                old = old_log_probs[rows]
                log_prob = self.policy.log_prob(states, steps, actions)
                log_ratio = log_prob - old
                deltas = log_ratio.detach().to(torch.float64)
                kls.append((0.5 * deltas.square()).mean().item())
                fractions.append(((deltas.exp() - 1.0).abs() > eps).to(torch.float64).mean().item())
                ratio = log_ratio.exp()
                unclipped = ratio * advantage
                clipped = ratio.clamp(1.0 - eps, 1.0 + eps) * advantage
                surrogate = torch.minimum(unclipped, clipped).mean()
                entropy = self.entropy_objective() / self.policy.n_steps
                loss = -(surrogate + entropy)
                losses.append(check_finite("policy/loss", loss.item()))
                norms.append(self.apply(loss))
        stats = dict(loss=sum(losses) / len(losses), grad_norm=sum(norms) / len(norms),
                     approx_kl=sum(kls) / len(kls), clip_fraction=sum(fractions) / len(fractions),
                     approx_kl_first=kls[0], ppo_updates=len(losses))
        stats.update(self.finish_update(batch))
        return stats


# ---------------------------------------------------------------------------------------
# DxDP (agents/src/dxdp.rs, docs/algorithms.md §4.2) with dxmi-8gaussians.toml and the [dxdp] defaults.


class TimeConditionedValue(nn.Module):
    def __init__(self, dim, n_steps, hidden=128, depth=3, activation="silu", time_embed_dim=16):
        super().__init__()
        self.net = Mlp(dim + time_embed_dim, hidden, depth, 1, activation)
        self.n_steps = n_steps
        self.time_embed_dim = time_embed_dim

    def cost_to_go(self, x, ts):
        return self.net(with_time_embedding(x, ts, self.n_steps, self.time_embed_dim)).reshape(-1)


class Dxdp:
    """lr 1e-4, lr_log_sigma 1e-3, τ_H 0.1, τ_v 0.01, adaptive s_t², policy clip 0.1;
    V_ψ (d+16) → 128 × 3 → 1 SiLU, Adam lr 1e-3, no value clip (norm still computed),
    target running_costs, policy_batch 0 (all T·B states)."""

    name = "dxdp"

    def __init__(self, policy: GaussianPolicy, ebm: EnergyModel, lr=1e-4, lr_log_sigma=1e-3,
                 tau_entropy=0.1, tau_velocity=0.01, grad_clip=0.1, value_grad_clip=0.0):
        self.policy = policy
        self.ebm = ebm
        self.optimizer = policy_optimizer(policy, lr, lr_log_sigma)
        self.params = list(policy.parameters())
        self.value = TimeConditionedValue(policy.dim, policy.n_steps)
        self.value_params = list(self.value.parameters())
        self.value_optimizer = adam(self.value_params, 1e-3)
        self.velocity = VelocityScale(policy.schedule)
        self.tau_entropy = tau_entropy
        self.tau_velocity = tau_velocity
        self.grad_clip = grad_clip
        self.value_grad_clip = value_grad_clip

    def act(self, x, t: int):
        noise = torch.randn(x.shape[0], x.shape[1])
        return self.policy.sample_step(x, t, noise), None

    @torch.no_grad()
    def td_targets(self, rollout: Rollout, t: int):
        x_prev = rollout.state(t - 1)
        if t - 1 == 0:
            next_cost = self.ebm.reward(x_prev) * -1.0
        else:
            next_cost = self.value.cost_to_go(x_prev, t - 1)
        d = self.policy.dim
        per_dim_entropy = math.log(self.policy.sigmas()[t - 1]) + HALF_LOG_TWO_PI_E
        velocity_weight = self.tau_velocity / (2.0 * self.velocity.get(t) * d)
        squared = (x_prev - rollout.state(t)).square().sum(dim=1)
        return next_cost + velocity_weight * squared - self.tau_entropy * per_dim_entropy

    def value_step(self, rollout: Rollout, t: int):
        targets = self.td_targets(rollout, t)
        x_t = rollout.state(t)
        predicted = self.value.cost_to_go(x_t, t)
        value_mean = predicted.detach().mean().item()
        loss = (predicted - targets).square().mean()
        loss_value = check_finite(f"value/loss_{t}", loss.item())
        self.value_optimizer.zero_grad()
        loss.backward()
        grad_norm_and_clip(self.value_params, self.value_grad_clip)
        self.value_optimizer.step()
        return loss_value, value_mean

    def group_loss(self, x_t, ts, noise, terminal: bool):
        d = x_t.shape[1]
        mean = self.policy.mean(x_t, ts)
        log_sigma = self.policy.log_sigma_at(ts)
        sigma = log_sigma.exp().unsqueeze(1)
        x_next = mean + sigma * noise
        velocity_weights = self.tau_velocity / (2.0 * self.velocity.column(ts) * d)
        velocity_cost = (x_next - x_t).square().sum(dim=1) * velocity_weights
        if terminal:
            future = self.ebm.reward(x_next) * -1.0
        else:
            future = self.value.cost_to_go(x_next, ts - 1)
        future_sum = future.detach().sum().item()
        per_row = future + velocity_cost - log_sigma * self.tau_entropy
        return per_row.sum(), future_sum

    def policy_loss(self, x_t, ts, noise):
        """States ending on E_φ (t = 1) and on V_ψ (t ≥ 2) go through separate calls."""
        rows = x_t.shape[0]
        total, future_total = None, 0.0
        for terminal in (True, False):
            select = (ts == 1) if terminal else (ts != 1)
            index = torch.nonzero(select).reshape(-1)
            if index.numel() == 0:
                continue
            group_sum, future = self.group_loss(x_t[index], ts[index], noise[index], terminal)
            future_total += future
            total = group_sum if total is None else total + group_sum
        return total / rows, future_total / rows

    def update(self, rollout: Rollout):
        T, B, d = rollout.n_steps, rollout.batch_size, self.policy.dim
        stats = {}
        for t in range(1, T + 1):
            stats[f"value/loss_{t}"], stats[f"value/V_{t}"] = self.value_step(rollout, t)
        states, _, steps = rollout.stacked_transitions()
        noise = torch.randn(steps.shape[0], d)
        loss, future_cost = self.policy_loss(states, steps, noise)
        loss_value = check_finite("policy/loss", loss.item())
        self.optimizer.zero_grad()
        # As in Rust, this backward also reaches V_ψ's and E_φ's weights (their gradients
        # are computed and then dropped: each is zeroed before its own step).
        loss.backward()
        grad_norm = check_finite("policy/grad_norm", grad_norm_and_clip(self.params, self.grad_clip))
        self.optimizer.step()
        squared_lengths = rollout.squared_step_lengths()
        _, velocity_cost = returns_to_go(rollout.terminal_reward, squared_lengths, T, B, d,
                                         self.velocity, self.tau_velocity)
        self.velocity.observe(squared_lengths, B, d)
        stats.update(loss=loss_value, grad_norm=grad_norm, value_term=future_cost,
                     velocity_cost=velocity_cost)
        return stats


# ---------------------------------------------------------------------------------------
# The IRL iteration (src/irl.rs `irl_iteration`, `IrlPhase::step`).


class FinetuneState:
    def __init__(self, agent_name, batch, ppo_minibatch=None):
        schedule = Schedule(N_STEPS["value"])
        policy = GaussianPolicy(schedule)
        self.ebm = EnergyModel()
        self.learner = ContrastiveLearner(self.ebm)
        if agent_name == "reinforce":
            self.agent = Reinforce(policy)
        elif agent_name == "ppo":
            self.agent = Ppo(policy, minibatch=ppo_minibatch)
        elif agent_name == "dxdp":
            self.agent = Dxdp(policy, self.ebm)
        else:
            raise ValueError(agent_name)
        self.batch = batch
        self.data = training_data()

    def collect_rollout(self):
        """src/rollout.rs `collect_rollout` in envs/src/denoising.rs `DenoisingEnv`: reset
        draws x_T ~ N(0, I); T agent steps; at t = 0 the environment scores the samples
        with the EBM. No gradient (Rust acts without a tape)."""
        policy = self.agent.policy
        with torch.no_grad():
            x = torch.randn(self.batch, policy.dim)
            states, log_probs = [x], []
            for t in range(policy.n_steps, 0, -1):
                nxt, log_prob = self.agent.act(states[-1], t)
                if log_prob is not None:
                    log_probs.append(log_prob)
                states.append(nxt)
            # The environment's terminal reward: overwritten below after the EBM update
            # (irl_iteration recomputes it), so this forward is wasted work in Rust too.
            terminal = self.ebm.reward(states[-1])
        return Rollout(states, log_probs, terminal)

    def iterate(self):
        rollout = self.collect_rollout()
        B = rollout.batch_size
        # n_critic = 1: one reward update, data batch vs the rollout's samples.
        positive = self.data.sample(B)
        self.learner.step(positive, rollout.samples())
        with torch.no_grad():
            rollout.terminal_reward = self.ebm.reward(rollout.samples())
        mean_std(rollout.terminal_reward)
        stats = self.agent.update(rollout)
        self.agent.policy.sigmas()
        return stats


# ---------------------------------------------------------------------------------------
# DDAEBM (agents/src/ddaebm.rs `Ddaebm::train_step`, docs/algorithms.md §5) with ddaebm-25gaussians.toml.


class Ddaebm:
    """T = 4 (vp), every network (inputs + emb 16) → 300 × 2 → out, ReLU; n_z = 2, r1 0.02,
    λ_z 0.1, variance floor 1e-2, Adam lr 5e-4 betas (0, 0.9) for D and for G + encoder
    (one optimiser), no clipping (norms still computed)."""

    def __init__(self, batch, n_steps=4, hidden=300, depth=2, n_z=2, r1=0.02, lambda_z=0.1,
                 recon_variance_floor=1e-2, lr_energy=5e-4, lr_generator=5e-4, betas=(0.0, 0.9),
                 grad_clip=0.0):
        self.schedule = Schedule(n_steps)
        self.n_z = n_z
        self.r1 = r1
        self.lambda_z = lambda_z
        self.floor = recon_variance_floor
        self.grad_clip = grad_clip
        self.batch = batch
        self.energy = Mlp(DIM + 16, hidden, depth, 1, "relu")  # D_φ([x, emb(t-1)])
        self.generator = Mlp(DIM + n_z + 16, hidden, depth, DIM, "relu")  # G_θ([z, x_t, emb(t)])
        self.encoder = Mlp(2 * DIM + 16, hidden, depth, 2 * n_z, "relu")  # q_ω([x_{t-1}, x_t, emb(t)])
        self.energy_params = list(self.energy.parameters())
        self.generator_params = list(self.generator.parameters()) + list(self.encoder.parameters())
        self.energy_optimizer = adam(self.energy_params, lr_energy, betas)
        self.generator_optimizer = adam(self.generator_params, lr_generator, betas)
        self.data = twenty_five_gaussians()

    def d(self, x, steps):
        return self.energy(with_time_embedding(x, steps, self.schedule.n_steps)).reshape(-1)

    def predict_x0(self, x_t, z, ts):
        return self.generator(with_time_embedding(torch.cat([z, x_t], dim=1), ts, self.schedule.n_steps))

    def posterior_mean(self, x0_hat, x_t, ts):
        s = self.schedule
        return x0_hat * per_row(s.t_c1, ts) + x_t * per_row(s.t_c2, ts)

    def encode(self, x_prev, x_t, ts):
        out = self.encoder(with_time_embedding(torch.cat([x_prev, x_t], dim=1), ts, self.schedule.n_steps))
        return out[:, : self.n_z], out[:, self.n_z:]

    def forward_log_density(self, x_prev, x_t, ts):
        """log q(x_t | x_{t-1}) = -‖x_t - √α_t x_{t-1}‖²/(2β_t) - (d/2) log(2π β_t) per row."""
        s = self.schedule
        d = x_t.shape[1]
        beta = s.t_beta[ts]
        residual = x_prev * -per_row(s.t_sqrt_alpha, ts) + x_t
        return residual.square().sum(dim=1) * (-0.5 / beta) + (-0.5 * d) * torch.log(2.0 * math.pi * beta)

    def train_step(self):
        s = self.schedule
        rows, dim = self.batch, DIM
        x0 = self.data.sample(rows)  # agents/src/ddaebm.rs `DdaebmPhase::step`: a fresh data batch per step
        ts = torch.randint(1, s.n_steps + 1, (rows,))
        eps_prev = torch.randn(rows, dim)
        eps_t = torch.randn(rows, dim)
        z = torch.randn(rows, self.n_z)
        eps_posterior = torch.randn(rows, dim)
        eps_z = torch.randn(rows, self.n_z)
        steps = ts - 1
        # The real pair by the forward process.
        x_prev = x0 * per_row(s.t_sqrt_ab, steps) + eps_prev * per_row(s.t_sqrt_one_minus_ab, steps)
        x_t = x_prev * per_row(s.t_sqrt_alpha, ts) + eps_t * per_row(s.t_sqrt_beta, ts)

        # The fake x̃_{t-1} (graph kept for the generator step; the energy step sees its value).
        spread = torch.sqrt(torch.clamp(s.t_beta_tilde[ts], min=0.0)).unsqueeze(1)
        fake = self.posterior_mean(self.predict_x0(x_t, z, ts), x_t, ts) + eps_posterior * spread

        # Energy step: L_D = mean(-D(x_{t-1}) + D(x̃_{t-1})) + (r1/2) mean ‖∇_{x_{t-1}}[D + log q]‖².
        # Rust writes ∇_x D out as ops (value_and_input_gradient, no double backward in
        # dfdx); here autograd.grad with create_graph, on the same single forward of D.
        x_real = x_prev.detach().requires_grad_(True)
        d_real = self.d(x_real, steps)
        log_q = self.forward_log_density(x_real, x_t, ts)
        (gradient,) = torch.autograd.grad((d_real + log_q).sum(), x_real, create_graph=True)
        r1 = gradient.square().sum(dim=1).mean() * (0.5 * self.r1)
        d_fake = self.d(fake.detach(), steps)
        d_real_mean = d_real.detach().mean().item()
        d_fake_mean = d_fake.detach().mean().item()
        r1_value = r1.item()
        loss_d = d_fake.mean() - d_real.mean() + r1
        loss_d_value = check_finite("ddaebm/loss_D", loss_d.item())
        self.energy_optimizer.zero_grad()
        loss_d.backward()
        check_finite("ddaebm/grad_norm_D", grad_norm_and_clip(self.energy_params, self.grad_clip))
        # Rust computes the generator loss against an updated *copy* of D and its Adam
        # state (so that a non-finite L_G leaves everything unchanged); updating in place
        # before the generator loss is the same computation.
        self.energy_optimizer.step()

        # Generator + encoder step against the updated energy, held fixed: the backward
        # pass reaches the fake through D but computes no gradient of D's weights (Rust:
        # `StepEnergy::forward_frozen`; GAN code's `requires_grad_(False)` on the critic).
        for p in self.energy_params:
            p.requires_grad_(False)
        conditional = self.d(fake, steps) + self.forward_log_density(fake, x_t, ts)
        reverse = conditional.mean() * -1.0
        m_fake, v_fake = self.encode(fake, x_t, ts)
        latent = (0.5 * ((z - m_fake).square() * torch.exp(-v_fake) + v_fake).sum(dim=1)
                  + self.n_z * HALF_LOG_TWO_PI).mean()
        m_real, v_real = self.encode(x_prev, x_t, ts)
        z_omega = m_real + torch.exp(v_real * 0.5) * eps_z
        mean_real = self.posterior_mean(self.predict_x0(x_t, z_omega, ts), x_t, ts)
        variance = torch.clamp(s.t_beta_tilde[ts], min=self.floor)
        constant = (0.5 * dim * torch.log(2.0 * math.pi * variance.to(torch.float64))).sum().item() / rows
        recon = ((mean_real - x_prev).square().sum(dim=1) * (0.5 / variance)).mean() + constant
        kl = (0.5 * (m_real.square() + torch.exp(v_real) - v_real - 1.0).sum(dim=1)).mean()
        values = [reverse.item(), latent.item(), recon.item(), kl.item()]
        loss_g = reverse + latent * self.lambda_z + recon + kl
        loss_g_value = check_finite("ddaebm/loss_G", loss_g.item())
        self.generator_optimizer.zero_grad()
        loss_g.backward()
        for p in self.energy_params:
            p.requires_grad_(True)
        check_finite("ddaebm/grad_norm_G", grad_norm_and_clip(self.generator_params, self.grad_clip))
        self.generator_optimizer.step()
        return dict(loss_D=loss_d_value, loss_G=loss_g_value, r1=r1_value, D_real=d_real_mean,
                    D_fake=d_fake_mean, parts=values)


# ---------------------------------------------------------------------------------------
# Timing and rows.


def synchronize():
    """Waits for the GPU's queued work (a no-op on the CPU), so a block's time holds it."""
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def bench_row(name, batch, quick, block_seconds):
    torch.manual_seed(0)
    reset_peak_memory()
    unit, n_steps, width = "it/s", 4, 128
    if name == "dsm_step":
        n_steps = N_STEPS["value"]
        state = PretrainState(Schedule(n_steps), batch)
        iterate = state.step
    elif name in ("sample_t4", "sample_t100"):
        n_steps = 4 if name == "sample_t4" else 100
        policy = GaussianPolicy(Schedule(n_steps))
        unit = "samples/s"

        def iterate():
            with torch.no_grad():
                policy.sample(batch)
    elif name in ("gcd_reinforce", "gcd_ppo", "dxdp"):
        agent = {"gcd_reinforce": "reinforce", "gcd_ppo": "ppo", "dxdp": "dxdp"}[name]
        # PPO: two minibatches per epoch at every batch, as the shipped 512 at B = 256.
        n_steps = N_STEPS["value"]
        state = FinetuneState(agent, batch, ppo_minibatch=max(batch * n_steps // 2, 1))
        iterate = state.iterate
    elif name == "ddaebm":
        state = Ddaebm(batch)
        width = 300
        iterate = state.train_step
    else:
        raise ValueError(f"unknown row {name!r}: expected one of {', '.join(ROW_NAMES)}")
    repeats, per_block, min_s, median_s, warmup_s = time_iterations(
        quick, block_seconds, iterate, synchronize)
    per_iteration = batch if unit == "samples/s" else 1
    return dict(name=name, batch=batch, n_steps=n_steps, width=width, unit=unit, repeats=repeats,
                iterations_per_repeat=per_block, min_s=min_s, median_s=median_s,
                rate=per_iteration / median_s, warmup_s=warmup_s, peak_memory_mib=peak_memory_mib())


def machine_info(adam_impl="single", compiled=False):
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import numpy
        versions["numpy"] = numpy.__version__
    except ImportError:
        pass
    versions["blas"] = "mkl" if torch.backends.mkl.is_available() else "other"
    profile = "torch.compile (inductor) networks" if compiled else "eager"
    if adam_impl != "single":
        profile += f", {adam_impl} Adam"
    device = torch.get_default_device()
    if device.type == "cuda":
        versions["gpu"] = torch.cuda.get_device_name(device)
    return dict(cores=cores, threads=torch.get_num_threads(), cpu=cpu_model(), profile=profile,
                device=device.type, versions=versions)


def to_markdown(report):
    m = report["machine"]
    out = [f"{report['implementation']} on {m['cpu']} ({m['cores']} cores, {m['threads']} threads, "
           f"{m['profile']}, device {m['device']}, torch {m['versions']['torch']})", "",
           "| row | batch | T | width | rate | unit | min ms | median ms | blocks × its |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        out.append(f"| {r['name']} | {r['batch']} | {r['n_steps']} | {r['width']} | {r['rate']:.1f} | "
                   f"{r['unit']} | {r['min_s'] * 1e3:.3f} | {r['median_s'] * 1e3:.3f} | "
                   f"{r['repeats']} × {r['iterations_per_repeat']} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# --check: cheap correctness checks (not timed).


def run_checks():
    torch.manual_seed(0)
    ok = True

    def report(label, passed, detail=""):
        nonlocal ok
        ok &= bool(passed)
        print(f"[{'ok' if passed else 'FAIL'}] {label} {detail}")

    # DSM: 200 steps at B = 256 reduce the loss.
    state = PretrainState(Schedule(4), 256)
    losses = [state.step() for _ in range(200)]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    report("dsm: 200 steps reduce the loss", last < 0.8 * first, f"({first:.3f} -> {last:.3f})")
    ema_moved = any(not torch.equal(s, p) for s, p in zip(state.ema, state.params))
    report("dsm: EMA follows the weights", ema_moved)

    def snapshot(module_or_params):
        params = module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params
        return [p.detach().clone() for p in params]

    def changed(before, module_or_params, skip=()):
        after = snapshot(module_or_params)
        return all(not torch.equal(a, b) for i, (a, b) in enumerate(zip(before, after)) if i not in skip)

    for agent in ("reinforce", "ppo", "dxdp"):
        torch.manual_seed(1)
        fs = FinetuneState(agent, 64, ppo_minibatch=64 * 4 // 2)
        policy = fs.agent.policy
        eps_before = snapshot(policy.eps_net)
        sigma_before = policy.log_sigma.detach().clone()
        ebm_before = snapshot(fs.ebm)
        value_net = fs.agent.value if agent == "dxdp" else fs.agent.baseline.net
        value_before = snapshot(value_net)
        s2_before = list(fs.agent.velocity.s2)
        stats = fs.iterate()
        after = policy.log_sigma.detach()
        report(f"{agent}: every ε-net tensor changes", changed(eps_before, policy.eps_net))
        report(f"{agent}: log σ_t (t >= 2) change, σ_1 frozen",
               bool((after[1:] != sigma_before[1:]).all()) and bool(after[0] == sigma_before[0]),
               f"(σ = {[round(s, 4) for s in policy.sigmas()]})")
        report(f"{agent}: every EBM tensor changes", changed(ebm_before, fs.ebm))
        report(f"{agent}: every value tensor changes", changed(value_before, value_net))
        report(f"{agent}: adaptive s_t² moves", fs.agent.velocity.s2 != s2_before)
        if agent == "ppo":
            report("ppo: 8 Adam steps (4 epochs × 2 minibatches)", stats["ppo_updates"] == 8)
            report("ppo: the first minibatch starts at ρ = 1 (log π_old = log π)",
                   stats["approx_kl_first"] < 1e-10,
                   f"(first approx_kl {stats['approx_kl_first']:.2e}, mean {stats['approx_kl']:.2e})")
    # The REINFORCE log σ gradient equals the analytic one for one step.
    torch.manual_seed(2)
    fs = FinetuneState("reinforce", 64)
    rollout = fs.collect_rollout()
    batch = fs.agent.score(rollout)
    loss = fs.agent.loss(batch)
    fs.agent.optimizer.zero_grad()
    loss.backward()
    with torch.no_grad():
        policy_mean = fs.agent.policy.mean(batch["states"], batch["steps"])
        sig2 = torch.tensor(fs.agent.policy.sigmas()).square()[batch["steps"] - 1]
        sq = (policy_mean - batch["actions"]).square().sum(1)
        d = DIM
        per_row = (sq / sig2 - d) * batch["advantages"]  # ∂ log π / ∂ log σ × A
        analytic = torch.zeros(4)
        analytic.index_add_(0, batch["steps"] - 1, per_row)
        analytic = -(analytic / 64 + fs.agent.tau_entropy)  # entropy: (τ_H/d)·d per step
        analytic[0] = 0.0
    got = fs.agent.policy.log_sigma.grad
    report("reinforce: ∂L/∂log σ matches the analytic gradient",
           torch.allclose(got, analytic, rtol=1e-4, atol=1e-5), f"({got.tolist()} vs {analytic.tolist()})")

    # DDAEBM: every network changes, R1 is positive, 100 steps run finite.
    torch.manual_seed(3)
    model = Ddaebm(200)
    before = [snapshot(model.energy), snapshot(model.generator), snapshot(model.encoder)]
    stats = model.train_step()
    # D's output bias cancels in mean D(fake) - mean D(real) and R1 does not see it: its
    # gradient is exactly 0 (in Rust too), so it alone stays put.
    last_bias = len(before[0]) - 1
    report("ddaebm: D (but its output bias), G and the encoder all change",
           changed(before[0], model.energy, skip=(last_bias,)) and changed(before[1], model.generator)
           and changed(before[2], model.encoder)
           and torch.equal(before[0][last_bias], model.energy.layers[-1].bias.detach()))
    report("ddaebm: R1 > 0", stats["r1"] > 0, f"(r1 {stats['r1']:.4g})")
    for _ in range(100):
        stats = model.train_step()
    report("ddaebm: 100 steps stay finite", all(math.isfinite(v) for v in stats["parts"]),
           f"(loss_D {stats['loss_D']:.3f}, loss_G {stats['loss_G']:.3f})")
    # The R1 gradient through the energy net equals a finite-difference estimate.
    torch.manual_seed(4)
    x = torch.randn(5, DIM, dtype=torch.float64)
    net64 = Mlp(DIM + 16, 300, 2, 1, "relu").double()
    steps = torch.tensor([0, 1, 2, 3, 0])
    emb = time_embedding(steps, 4, 16).double()
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net64(torch.cat([xr, emb], 1)).sum(), xr)
    h = 1e-6
    fd = torch.zeros_like(x)
    for j in range(DIM):
        e = torch.zeros_like(x)
        e[:, j] = h
        fd[:, j] = (net64(torch.cat([x + e, emb], 1)) - net64(torch.cat([x - e, emb], 1))).reshape(-1) / (2 * h)
    report("ddaebm: ∇_x D by autograd matches finite differences", torch.allclose(g, fd, atol=1e-6))
    # Sampling: samples of the right shape and finite.
    x0 = GaussianPolicy(Schedule(100)).sample(128)
    report("sample_t100: 128 finite samples of 2-D", x0.shape == (128, 2) and bool(torch.isfinite(x0).all()))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="batches 64 and 256 only, fewer blocks")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: os.cpu_count())")
    parser.add_argument("--rows", default="", help="only these rows, comma-separated")
    parser.add_argument("--batches", default="", help="only these batch sizes, comma-separated")
    parser.add_argument("--block-seconds", type=float, default=0.3, help="seconds one timed block lasts")
    parser.add_argument("--adam", choices=["single", "foreach", "fused"], default="single",
                        help="torch.optim.Adam implementation (default: single, PyTorch's CPU default)")
    parser.add_argument("--check", action="store_true", help="run the correctness checks instead")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every network (the warm-up, reported as warmup_s, holds the compilation)")
    parser.add_argument("--device", default="cpu",
                        help="the torch device every tensor is made on (cpu, cuda)")
    parser.add_argument("--n-steps", type=int, default=4,
                        help="denoising steps T of the dsm_step and fine-tuning rows (default 4)")
    parser.add_argument("--dim", type=int, default=DIM,
                        help="data dimension d of the dsm_step and fine-tuning rows: 2 is 8 Gaussians, "
                             "else 8 Gaussians on a sphere of radius 4 (dgym's data.dataset=gmm); default 2")
    args = parser.parse_args(argv)
    if args.n_steps < 1:
        parser.error("--n-steps: at least 1")
    if args.dim < 1:
        parser.error("--dim: at least 1")
    # The checks are written for the shipped T = 4 and 2-D data.
    DATA["dim"] = DIM if args.check else args.dim
    N_STEPS["value"] = 4 if args.check else args.n_steps
    torch.set_default_device(args.device)
    COMPILE["on"] = args.compile
    torch.set_num_threads(max(args.threads or 1, 1))
    ADAM_KW.clear()
    if args.adam != "single":
        ADAM_KW[args.adam] = True
    if args.check:
        return 0 if run_checks() else 1
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROW_NAMES]
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r}: expected one of {', '.join(ROW_NAMES)}")
    if DATA["dim"] != DIM and (not rows or "ddaebm" in rows):
        parser.error("--dim: the ddaebm row is 2-D only; pick the other rows with --rows")
    batches = [int(b) for b in args.batches.split(",") if b]
    if any(b <= 0 for b in batches):
        parser.error("--batches: a batch size must be at least 1")
    if not (args.block_seconds > 0 and math.isfinite(args.block_seconds)):
        parser.error("--block-seconds: must be a positive number of seconds")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        open(args.json, "w").close()  # fail now rather than after minutes of timing
    results = []
    for name in ROW_NAMES:
        if rows and name not in rows:
            continue
        row_batches = list(batches) if batches else list(QUICK_BATCHES if args.quick else BATCHES)
        if name == "ddaebm" and not batches:
            row_batches = sorted(row_batches + [DDAEBM_REFERENCE_BATCH])
        for batch in row_batches:
            row = bench_row(name, batch, args.quick, args.block_seconds)
            print(f"{row['name']:>14} batch {row['batch']:>5}: {row['rate']:>10.1f} {row['unit']} "
                  f"(median {row['median_s'] * 1e3:.3f} ms, min {row['min_s'] * 1e3:.3f} ms)",
                  file=sys.stderr, flush=True)
            results.append(row)
    implementation = "pytorch-compile" if args.compile else "pytorch-eager"
    report = dict(implementation=implementation, machine=machine_info(args.adam, args.compile), rows=results)
    print(to_markdown(report), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
