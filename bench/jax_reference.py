"""The JAX `jit` peer of `dgym bench` for the rows that are one pure function: the DSM step
(`dsm_step`) and ancestral sampling (`sample_t4`, `sample_t100`), each one `jax.jit`
program (the whole step: data, noise, ε-network, loss, gradient, global norm, Adam, EMA;
the whole T-step chain), with the same shapes, initialisation, losses and optimiser as
bench/torch_reference.py (which says where each piece comes from in the Rust code). The
fine-tuning rows and DDAEBM are not written here.

    python bench/jax_reference.py [--json OUT] [--quick] [--rows dsm_step,sample_t4] [--batches 64,256]
        [--block-seconds S] [--n-steps T] [--dim d]

Differences, none of which changes the work per iteration: JAX's own random streams
(threefry), and the time embedding in f32 (the Rust code and the torch peer compute it
in f64 and cast). The warm-up (reported as `warmup_s`) holds the compilation. Each step's
loss and gradient norm are read back to the host, as dgym and the torch peer do to check
that they are finite.
"""

import argparse
import json
import math
import os
import platform
import sys

import jax
import jax.numpy as jnp

from bench_common import cpu_model, peak_memory_mib, reset_peak_memory, time_iterations

ROW_NAMES = ["dsm_step", "sample_t4", "sample_t100"]
# dgym's other rows: accepted by --rows (so compare.sh can pass its arguments on) and skipped.
NOT_WRITTEN = ["gcd_reinforce", "gcd_ppo", "dxdp", "ddaebm"]
BATCHES = [64, 256, 1024, 4096]
QUICK_BATCHES = [64, 256]
HIDDEN, DEPTH, EMBED = 128, 3, 16


def schedule(n_steps, beta_min=0.1, beta_max=20.0):
    """The vp schedule's tables indexed by t (torch_reference.py `Schedule`), as f32 arrays."""
    def vp_time(i):
        return i / n_steps * (1.0 - 1e-3) + 1e-3

    ab_raw = [math.exp(-0.5 * s * s * (beta_max - beta_min) - s * beta_min)
              for s in (vp_time(i) for i in range(n_steps + 1))]
    betas = [min(1.0 - ab_raw[t] / ab_raw[t - 1], 0.999) for t in range(1, n_steps + 1)]
    ab = [1.0]
    for b in betas:
        ab.append(ab[-1] * (1.0 - b))
    beta = [float("nan")] + betas

    def table(f, start=1):
        return jnp.array([0.0] * start + [f(t) for t in range(start, n_steps + 1)], dtype=jnp.float32)

    return dict(
        sqrt_ab=table(lambda t: math.sqrt(ab[t]), 0),
        sqrt_one_minus_ab=table(lambda t: math.sqrt(1.0 - ab[t]), 0),
        inv_sqrt_ab=table(lambda t: 1.0 / math.sqrt(ab[t])),
        eps_weight=table(lambda t: math.sqrt(1.0 - ab[t]) / math.sqrt(ab[t])),
        c1=table(lambda t: math.sqrt(ab[t - 1]) * beta[t] / (1.0 - ab[t])),
        c2=table(lambda t: math.sqrt(1.0 - beta[t]) * (1.0 - ab[t - 1]) / (1.0 - ab[t])),
        # σ_t: σ_1 = √β_1 (frozen), else the posterior's √β̃_t, the policy's initial values.
        sigma=table(lambda t: math.sqrt(beta[1]) if t == 1
                    else math.sqrt(beta[t] * (1.0 - ab[t - 1]) / (1.0 - ab[t]))),
    )


def init_mlp(key, widths):
    """nn.Linear's (and the Rust `Linear`'s) initialisation: uniform in ±1/√in."""
    params = []
    for a, b in zip(widths[:-1], widths[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / math.sqrt(a)
        params.append((jax.random.uniform(kw, (a, b), minval=-bound, maxval=bound),
                       jax.random.uniform(kb, (b,), minval=-bound, maxval=bound)))
    return params


def mlp(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.silu(x)
    return x


def time_embedding(ts, n_steps):
    half = EMBED // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (ts.astype(jnp.float32) * (1000.0 / n_steps))[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)


def data_means(dim):
    """8 Gaussians (std 0.5/1.414) in 2-D, else 8 on a sphere of radius 4 (std 0.5)."""
    if dim == 2:
        s = 1.0 / math.sqrt(2.0)
        unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
        return jnp.array([[4.0 * x / 1.414, 4.0 * y / 1.414] for x, y in unit]), 0.5 / 1.414
    v = jax.random.normal(jax.random.PRNGKey(0), (8, dim))
    return 4.0 * v / jnp.linalg.norm(v, axis=1, keepdims=True), 0.5


def dsm_row(batch, n_steps, dim, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, ema_decay=0.999):
    sched = schedule(n_steps)
    means, std = data_means(dim)
    params = init_mlp(jax.random.PRNGKey(0), [dim + EMBED] + [HIDDEN] * DEPTH + [dim])
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = dict(params=params, m=zeros, v=zeros, ema=params, step=jnp.array(0, jnp.int32),
                 key=jax.random.PRNGKey(1))

    def loss_fn(p, x_t, ts, noise):
        predicted = mlp(p, jnp.concatenate([x_t, time_embedding(ts, n_steps)], axis=1))
        return jnp.mean(jnp.sum(jnp.square(predicted - noise), axis=1))

    @jax.jit
    def step(state):
        key, kc, kx, kt, kn = jax.random.split(state["key"], 5)
        component = jax.random.randint(kc, (batch,), 0, means.shape[0])
        x0 = means[component] + std * jax.random.normal(kx, (batch, dim))
        ts = jax.random.randint(kt, (batch,), 1, n_steps + 1)
        noise = jax.random.normal(kn, (batch, dim))
        x_t = x0 * sched["sqrt_ab"][ts][:, None] + noise * sched["sqrt_one_minus_ab"][ts][:, None]
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x_t, ts, noise)
        leaves = jax.tree_util.tree_leaves(grads)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))
        t = state["step"] + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
        corr1, corr2 = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / corr1) / (jnp.sqrt(v / corr2) + eps), state["params"], m, v)
        ema = jax.tree_util.tree_map(lambda e, p: e + (1 - ema_decay) * (p - e), state["ema"], params)
        return dict(params=params, m=m, v=v, ema=ema, step=t, key=key), loss, grad_norm

    holder = {"state": state}

    def iterate():
        holder["state"], loss, grad_norm = step(holder["state"])
        for name, value in (("dsm/loss", float(loss)), ("dsm/grad_norm", float(grad_norm))):
            if not math.isfinite(value):
                raise FloatingPointError(f"{name} is not finite: {value}")

    return iterate


def sample_row(batch, n_steps, dim):
    sched = schedule(n_steps)
    params = init_mlp(jax.random.PRNGKey(0), [dim + EMBED] + [HIDDEN] * DEPTH + [dim])

    @jax.jit
    def sample(key):
        key, k0 = jax.random.split(key)
        x = jax.random.normal(k0, (batch, dim))

        def body(i, carry):
            x, key = carry
            t = n_steps - i
            key, kn = jax.random.split(key)
            ts = jnp.full((batch,), t)
            eps = mlp(params, jnp.concatenate([x, time_embedding(ts, n_steps)], axis=1))
            x0_hat = x * sched["inv_sqrt_ab"][t] - eps * sched["eps_weight"][t]
            mean = x0_hat * sched["c1"][t] + x * sched["c2"][t]
            return mean + sched["sigma"][t] * jax.random.normal(kn, (batch, dim)), key

        x, key = jax.lax.fori_loop(0, n_steps, body, (x, key))
        return x, key

    holder = {"key": jax.random.PRNGKey(2)}

    def iterate():
        x, holder["key"] = sample(holder["key"])
        x.block_until_ready()

    return iterate


def machine_info():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return dict(cores=cores, threads=cores, cpu=cpu_model(), profile="jax.jit (XLA)",
                device=jax.devices()[0].platform,
                versions={"jax": jax.__version__, "python": platform.python_version()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="batches 64 and 256 only, fewer blocks")
    parser.add_argument("--rows", default="", help="only these rows, comma-separated")
    parser.add_argument("--batches", default="", help="only these batch sizes, comma-separated")
    parser.add_argument("--block-seconds", type=float, default=0.3, help="seconds one timed block lasts")
    parser.add_argument("--n-steps", type=int, default=4, help="T of the dsm_step row (default 4)")
    parser.add_argument("--dim", type=int, default=2, help="data dimension d (default 2)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROW_NAMES + NOT_WRITTEN]
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r}: expected one of {', '.join(ROW_NAMES)}")
    skipped = [r for r in rows if r in NOT_WRITTEN]
    if skipped:
        print(f"jax_reference.py: no JAX version of {', '.join(skipped)}; skipped", file=sys.stderr)
    batches = [int(b) for b in args.batches.split(",") if b]
    if any(b <= 0 for b in batches):
        parser.error("--batches: a batch size must be at least 1")
    if args.n_steps < 1 or args.dim < 1:
        parser.error("--n-steps and --dim: at least 1")
    if not (args.block_seconds > 0 and math.isfinite(args.block_seconds)):
        parser.error("--block-seconds: must be a positive number of seconds")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        open(args.json, "w").close()  # fail now rather than after minutes of timing
    results = []
    for name in ROW_NAMES:
        if rows and name not in rows:
            continue
        for batch in batches or (QUICK_BATCHES if args.quick else BATCHES):
            reset_peak_memory()
            if name == "dsm_step":
                n_steps, unit = args.n_steps, "it/s"
                iterate = dsm_row(batch, n_steps, args.dim)
            else:
                n_steps, unit = (4 if name == "sample_t4" else 100), "samples/s"
                iterate = sample_row(batch, n_steps, args.dim)
            repeats, per_block, min_s, median_s, warmup_s = time_iterations(
                args.quick, args.block_seconds, iterate)
            per_iteration = batch if unit == "samples/s" else 1
            row = dict(name=name, batch=batch, n_steps=n_steps, width=HIDDEN, unit=unit,
                       repeats=repeats, iterations_per_repeat=per_block, min_s=min_s,
                       median_s=median_s, rate=per_iteration / median_s, warmup_s=warmup_s,
                       peak_memory_mib=peak_memory_mib())
            print(f"{name:>14} batch {batch:>5}: {row['rate']:>10.1f} {unit} "
                  f"(median {median_s * 1e3:.3f} ms, warm-up {warmup_s:.1f} s)", file=sys.stderr, flush=True)
            results.append(row)
    report = dict(implementation="jax-jit", machine=machine_info(), rows=results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
