"""CleanRL-style PPO in PyTorch on denoise-gym's native vector environment, starting from the
exported pretrained sampler of a DSM run, against the oracle (the exact log-density) or a
learning EBM (GCD/DxMI from Python: the reward's contrastive update runs every iteration).

    pip install ./python torch tensorboard
    dgym train experiments/configs/ddpm-8gaussians.toml            # the pretrained sampler
    python python/examples/ppo.py --init runs/ddpm-8gaussians --reward oracle --out runs/py-ppo-oracle
    python python/examples/ppo.py --init runs/ddpm-8gaussians --reward ebm --out runs/py-ppo-gcd

The objective is the Rust agents' entropy-regularised return: the final sample's reward, the
velocity running reward of every step and the closed-form entropy bonus (tau_H, tau_v and
the velocity scale as in oracle-8gaussians.toml / gcd-8gaussians.toml), with advantages
kept in the return's units (CleanRL's normalisation is --norm-adv). TensorBoard tags are
dgym's (reward/return_mean, policy/sigma_t, policy/loss, ebm/energy_pos, eval/swd, ...).
At the end it writes eval.json: dgym eval's SWD and MMD² of 10,000 samples (seed 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import denoise_gym as dg

HALF_LOG_TWO_PI_E = 0.5 * np.log(2 * np.pi * np.e)


class TorchSampler(nn.Module):
    """The Gaussian policy of a denoise-gym run, rebuilt from ``Sampler.export()``."""

    def __init__(self, exported: dict):
        super().__init__()
        self.layers = nn.ModuleList()
        for weight, bias in exported["layers"]:
            layer = nn.Linear(weight.shape[0], weight.shape[1])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(weight.T.copy()))
                layer.bias.copy_(torch.from_numpy(bias.copy()))
            self.layers.append(layer)
        self.activation = nn.ReLU() if exported["activation"] == "relu" else nn.SiLU()
        for name in ("time_embedding", "alpha_bar", "posterior_c1", "posterior_c2"):
            self.register_buffer(name, torch.as_tensor(np.asarray(exported[name]), dtype=torch.float32))
        self.log_sigma = nn.Parameter(torch.log(torch.as_tensor(exported["sigmas"], dtype=torch.float32)))
        mask = torch.ones(exported["n_steps"])
        if exported["fix_last_sigma"]:
            mask[0] = 0.0
        self.register_buffer("sigma_mask", mask)
        self.clip_x0 = float(exported["clip_x0"])
        self.n_steps = int(exported["n_steps"])

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, self.time_embedding[t - 1]], 1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = self.activation(h)
        return h

    def mean(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t - 1][:, None]
        x0_hat = (x - torch.sqrt(1 - ab) * self.eps(x, t)) / torch.sqrt(ab)
        if self.clip_x0 > 0:
            x0_hat = x0_hat.clamp(-self.clip_x0, self.clip_x0)
        return self.posterior_c1[t - 1][:, None] * x0_hat + self.posterior_c2[t - 1][:, None] * x

    def log_sigma_row(self) -> torch.Tensor:
        # σ_1 held fixed where the run fixed it: no gradient reaches it.
        return self.log_sigma * self.sigma_mask + self.log_sigma.detach() * (1 - self.sigma_mask)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        log_sigma = self.log_sigma_row()[t - 1]
        d = x.shape[1]
        squared = ((action - self.mean(x, t)) ** 2).sum(1)
        return -squared * torch.exp(-2 * log_sigma) / 2 - d * log_sigma - d * 0.5 * np.log(2 * np.pi)

    def entropy_sum(self, d: int) -> torch.Tensor:
        return d * (self.log_sigma_row() + HALF_LOG_TWO_PI_E).sum()


class Critic(nn.Module):
    """V(x_t, t) on [x_t, emb(t)], CleanRL's value network."""

    def __init__(self, dim: int, embedding: torch.Tensor, hidden: int = 128):
        super().__init__()
        self.register_buffer("embedding", embedding)
        self.net = nn.Sequential(
            nn.Linear(dim + embedding.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, self.embedding[t - 1]], 1)).squeeze(1)


def sample_with_env(policy: TorchSampler, n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` samples by running the policy through a vector env of ``n`` rows (no reward)."""
    env = dg.DenoisingVectorEnv("8gaussians", num_envs=n, reward=lambda x: np.zeros(len(x)), n_steps=policy.n_steps)
    obs = env.reset(seed=seed)[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(policy.n_steps):
            x = torch.from_numpy(obs[:, :-1])
            t = torch.full((n,), int(obs[0, -1]), dtype=torch.long)
            sigma = torch.exp(policy.log_sigma_row()[t - 1])[:, None]
            action = policy.mean(x, t) + sigma * torch.randn(x.shape, generator=generator)
            obs, *_ = env.step(action.numpy())
    return obs[:, :-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="a DSM run directory: the sampler PPO starts from")
    parser.add_argument("--reward", choices=["oracle", "ebm"], default="oracle")
    parser.add_argument("--out", required=True, help="TensorBoard log and eval.json go here")
    parser.add_argument("--iterations", type=int, default=500, help="rollouts of --num-envs episodes")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--clip", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-log-sigma", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--norm-adv",
        action="store_true",
        help="CleanRL's per-minibatch advantage normalisation (off: it rescales the return against "
        "the entropy bonus, and with tau_H = 2 the sigma_t then grow without bound; docs/python.md)",
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    sampler = dg.load_run(args.init).sampler()
    exported = sampler.export()
    policy = TorchSampler(exported)
    dim, T, n = exported["dim"], exported["n_steps"], args.num_envs
    # The port is exact: the same mean as the Rust policy.
    probe = np.random.default_rng(0).normal(size=(8, dim)).astype(np.float32)
    with torch.no_grad():
        ported = policy.mean(torch.from_numpy(probe), torch.full((8,), 2, dtype=torch.long)).numpy()
    np.testing.assert_allclose(ported, sampler.mean(probe, 2), rtol=1e-4, atol=1e-5)

    if args.reward == "oracle":
        # oracle-8gaussians.toml's objective.
        tau_entropy, tau_velocity, scale, scale_value = 2.0, 2.0, "fixed", 1.0
        reward = dg.OracleReward("8gaussians")
    else:
        # gcd-8gaussians.toml's objective and EBM.
        tau_entropy, tau_velocity, scale, scale_value = 0.1, 0.1, "adaptive", 1.0
        reward = dg.EnergyReward(dim, seed=args.seed, hidden=128, depth=3, activation="relu", gamma=1.0, lr=1e-3)
    costs = sampler.running_costs(tau_entropy, tau_velocity, scale, scale_value)
    data = dg.Dataset("8gaussians")
    env = dg.make_vec("8gaussians", num_envs=n, reward=reward, n_steps=T)
    critic = Critic(dim, policy.time_embedding)
    optimizer = torch.optim.Adam(
        [
            {"params": [p for name, p in policy.named_parameters() if name != "log_sigma"], "lr": args.lr},
            {"params": [policy.log_sigma], "lr": args.lr_log_sigma},
            {"params": critic.parameters(), "lr": 1e-3},
        ]
    )
    writer = SummaryWriter(args.out)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for iteration in range(args.iterations):
        obs = env.reset(seed=args.seed * 1_000_000 + iteration * n)[0]
        xs, ts, actions, log_probs_old = [], [], [], []
        velocity = np.zeros((T, n))
        with torch.no_grad():
            for k in range(T):
                x = torch.from_numpy(obs[:, :-1])
                t_now = int(obs[0, -1])
                t = torch.full((n,), t_now, dtype=torch.long)
                sigma = torch.exp(policy.log_sigma_row()[t - 1])[:, None]
                action = policy.mean(x, t) + sigma * torch.randn(x.shape, generator=generator)
                xs.append(x), ts.append(t), actions.append(action)
                log_probs_old.append(policy.log_prob(x, t, action))
                velocity[k] = costs.velocity_reward(x.numpy(), action.numpy(), t_now)
                obs, rewards, terminated, *_ = env.step(action.numpy())
        assert terminated.all()
        x0 = obs[:, :-1]
        costs.observe(np.stack([((xs[k] - actions[k]) ** 2).sum(1).numpy() for k in range(T)]))
        # Returns-to-go with γ = 1: the final reward plus the velocity rewards from step k on.
        returns = torch.as_tensor(rewards[None, :] + np.cumsum(velocity[::-1], 0)[::-1], dtype=torch.float32)
        stats = {}
        if args.reward == "ebm":
            stats.update({f"ebm/{k}": v for k, v in reward.update(data.sample(n, seed=10_000_000 + iteration), x0).items()})
        b_x, b_t, b_a = torch.cat(xs), torch.cat(ts), torch.cat(actions)
        b_logp, b_ret = torch.cat(log_probs_old), returns.reshape(-1)
        batch = len(b_x)
        minibatch = batch // args.minibatches
        clip_fractions = []
        for _ in range(args.epochs):
            order = torch.randperm(batch, generator=generator)
            for m in range(args.minibatches):
                idx = order[m * minibatch : (m + 1) * minibatch]
                value = critic(b_x[idx], b_t[idx])
                advantage = b_ret[idx] - value.detach()
                if args.norm_adv:
                    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
                ratio = torch.exp(policy.log_prob(b_x[idx], b_t[idx], b_a[idx]) - b_logp[idx])
                surrogate = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - args.clip, 1 + args.clip))
                entropy = policy.entropy_sum(dim)
                # The Rust agents' objective: the return's gradient summed over the T steps
                # (averaged over samples) plus tau_H times the chain's entropy.
                loss = T * surrogate.mean() - tau_entropy * entropy + 0.5 * ((value - b_ret[idx]) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(list(policy.parameters()) + list(critic.parameters()), 0.5)
                optimizer.step()
                clip_fractions.append(((ratio - 1).abs() > args.clip).float().mean().item())
        step = (iteration + 1)
        stats.update(
            {
                "reward/return_mean": float(rewards.mean()),
                "reward/return_std": float(rewards.std()),
                "policy/loss": float(loss.item()),
                "policy/entropy": float(entropy.item()),
                "policy/clip_fraction": float(np.mean(clip_fractions)),
                "policy/velocity_cost": float(-velocity.sum(0).mean()),
                "time/elapsed_s": time.time() - start,
            }
        )
        for k, sigma in enumerate(torch.exp(policy.log_sigma_row()).tolist()):
            stats[f"policy/sigma_{k + 1}"] = sigma
        for tag, value in stats.items():
            writer.add_scalar(tag, value, step)
        if step % 100 == 0 or step == args.iterations:
            samples = sample_with_env(policy, 2000, dim, seed=step)
            metrics = dg.evaluate(samples, data, seed=step)
            for tag in ("swd", "mmd2", "off_mode_fraction"):
                writer.add_scalar(f"eval/{tag}", metrics[tag], step)
            print(f"iteration {step}: return {stats['reward/return_mean']:.3f}, swd {metrics['swd']:.4f}, "
                  f"mmd2 {metrics['mmd2']:.4f}, clip fraction {stats['policy/clip_fraction']:.3f}", flush=True)
    final = dg.evaluate(sample_with_env(policy, 10_000, dim, seed=1), data, seed=1)
    start_metrics = dg.evaluate(sampler.sample(10_000, seed=1), data, seed=1)
    result = {
        "episodes": args.iterations * n,
        "env_steps": args.iterations * n * T,
        "wall_time_s": time.time() - start,
        "eval": final,
        "eval_start": start_metrics,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("episodes", "wall_time_s")}),
          {k: round(final[k], 4) for k in ("swd", "mmd2", "off_mode_fraction")},
          "start:", {k: round(start_metrics[k], 4) for k in ("swd", "mmd2")})


if __name__ == "__main__":
    main()
