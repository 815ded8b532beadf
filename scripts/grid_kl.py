#!/usr/bin/env python3
"""Independent check of an EBM's density quality from `dgym energy` output.

Usage: grid_kl.py ENERGIES.csv {8gaussians|25gaussians}
ENERGIES.csv holds a regular n×n grid (x, y, energy, ...), e.g. 256×256 over [-4, 4]².
Prints KL(p_true ‖ p_EBM) with p_EBM ∝ exp(-energy) (calibrated) and ∝ exp(-energy_raw),
both normalised over the grid. Standard library only.
"""
import csv
import math
import sys


def mixture(name):
    if name == "8gaussians":
        s = 1.0 / math.sqrt(2.0)
        centres = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
        return [(4 * x / 1.414, 4 * y / 1.414) for x, y in centres], 0.5 / 1.414
    if name == "25gaussians":
        return [(2 * i / 2.828, 2 * j / 2.828) for i in range(-2, 3) for j in range(-2, 3)], 0.1 / 2.828
    raise SystemExit(f"unknown mixture {name}")


def log_density(x, y, centres, std):
    terms = [-((x - cx) ** 2 + (y - cy) ** 2) / (2 * std * std) for cx, cy in centres]
    m = max(terms)
    return m + math.log(sum(math.exp(t - m) for t in terms)) - math.log(len(centres) * 2 * math.pi * std * std)


def kl(log_p, energies):
    def normalise(logs):
        m = max(logs)
        z = m + math.log(sum(math.exp(v - m) for v in logs))
        return [v - z for v in logs]
    lp = normalise(log_p)
    lq = normalise([-e for e in energies])
    return sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))


def main():
    path, name = sys.argv[1], sys.argv[2]
    centres, std = mixture(name)
    rows = list(csv.DictReader(open(path)))
    log_p = [log_density(float(r[k0]), float(r[k1]), centres, std) for r in rows
             for k0, k1 in [list(r.keys())[:2]]]
    print(f"points {len(rows)}")
    print(f"kl_calibrated {kl(log_p, [float(r['energy']) for r in rows]):.4f}")
    print(f"kl_raw {kl(log_p, [float(r['energy_raw']) for r in rows]):.4f}")


if __name__ == "__main__":
    main()
