"""Environment steps per second from Python: denoise-gym's native vector environment (and the
raw native class under it) beside a pure-numpy implementation of the same environment, and
the cost of one ``step`` call at one row (where the binding's overhead is all there is).

    pip install ./python
    python python/examples/speed.py [--repeats 3]

A step is one row moving one denoising step (``num_envs`` steps per call); every episode
ends with the oracle reward (the 8-Gaussians log-density) of its final samples. Times are the
median over repeats, each at least 1 s of stepping.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import denoise_gym as dg

T = 4
S = 1 / np.sqrt(2)
CENTRES = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (S, S), (S, -S), (-S, S), (-S, -S)]) / 1.414
STD = 0.5 / 1.414


class NumpyVecEnv:
    """The same environment in numpy: x_T ~ N(0, I) per row, actions checked for shape and
    finiteness, the oracle reward at the last step, NEXT_STEP autoreset."""

    def __init__(self, num_envs: int, dim: int = 2):
        self.n, self.dim = num_envs, dim
        self.rng = np.random.default_rng(0)
        self.t = None
        self.autoreset = False

    def reset(self, seed=None):
        self.x = self.rng.standard_normal((self.n, self.dim), dtype=np.float32)
        self.t, self.autoreset = T, False
        return self._obs()

    def _obs(self):
        out = np.empty((self.n, self.dim + 1), dtype=np.float32)
        out[:, :-1], out[:, -1] = self.x, self.t
        return out

    def step(self, actions):
        if self.autoreset:
            return self.reset(), np.zeros(self.n), np.zeros(self.n, bool), np.zeros(self.n, bool), {}
        a = np.asarray(actions)
        if a.shape != (self.n, self.dim) or a.dtype.kind != "f" or not np.isfinite(a).all():
            raise ValueError("bad actions")
        self.x = a.astype(np.float32)
        self.t -= 1
        terminated = self.t == 0
        rewards = np.zeros(self.n)
        if terminated:
            squared = ((self.x[:, None, :] - CENTRES[None]) ** 2).sum(-1)
            log_k = -squared / (2 * STD**2) - np.log(2 * np.pi * STD**2) - np.log(8)
            top = log_k.max(1)
            rewards = top + np.log(np.exp(log_k - top[:, None]).sum(1))
            self.autoreset = True
        return self._obs(), rewards, np.full(self.n, terminated), np.zeros(self.n, bool), {"t": self.t}


def steps_per_second(env, n: int, min_seconds: float = 1.0) -> float:
    obs = env.reset(seed=0)
    obs = obs[0] if isinstance(obs, tuple) else obs
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            obs, *_ = env.step(obs[:, :-1] * 0.9)
        calls += 50
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * n / elapsed


class RawNative:
    """The native class alone (no Gymnasium wrapper), with the same autoreset."""

    def __init__(self, n):
        self.env = dg.NativeVecEnv(2, T, n, dg.OracleReward("8gaussians"), 0)

    def reset(self, seed=None):
        x = self.env.reset(seed)
        return np.concatenate([x, np.full((len(x), 1), T, np.float32)], 1)

    def step(self, actions):
        if self.env.t == 0:
            return (self.reset(),)
        x, r, term, t = self.env.step(np.ascontiguousarray(actions))
        return (np.concatenate([x, np.full((len(x), 1), t, np.float32)], 1), r, term)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}")
    print("| num_envs | denoise_gym.make_vec (steps/s) | NativeVecEnv alone | numpy (steps/s) | make_vec / numpy |")
    print("|---:|---:|---:|---:|---:|")
    for n in (1, 256, 4096):
        rates = {name: [] for name in ("vec", "raw", "numpy")}
        for _ in range(args.repeats):
            rates["vec"].append(steps_per_second(dg.make_vec("8gaussians", num_envs=n), n))
            rates["raw"].append(steps_per_second(RawNative(n), n))
            rates["numpy"].append(steps_per_second(NumpyVecEnv(n), n))
        med = {k: float(np.median(v)) for k, v in rates.items()}
        print(f"| {n} | {med['vec']:,.0f} | {med['raw']:,.0f} | {med['numpy']:,.0f} | {med['vec'] / med['numpy']:.2f} |")
    # One call at one row: what a step costs besides the work.
    native = dg.NativeVecEnv(2, 10**9, 1)
    native.reset(0)
    action = np.zeros((1, 2), np.float32)
    for _ in range(1000):
        native.step(action)
    start, calls = time.perf_counter(), 20000
    for _ in range(calls):
        native.step(action)
    per_call = (time.perf_counter() - start) / calls
    print(f"NativeVecEnv.step at one row: {per_call * 1e6:.1f} µs per call (a mid-episode step: no reward)")


if __name__ == "__main__":
    main()
