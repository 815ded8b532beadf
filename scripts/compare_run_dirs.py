"""Compares two directories of run directories (one per config, same names), as written
by two builds: each run's metrics.csv without its `time/` columns and its summary.json
without wall-clock fields must be identical. Prints one line per run and a verdict.

    python3 scripts/compare_run_dirs.py BEFORE_DIR AFTER_DIR
"""

import csv
import json
import os
import sys

TIMING = ("wall_time_s", "dsm_steps_per_s", "iterations_per_s", "eval_time_s")


def rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMING}
    return value


def main(before_root, after_root):
    same_everywhere = True
    for name in sorted(os.listdir(before_root)):
        before = os.path.join(before_root, name)
        after = os.path.join(after_root, name)
        if not os.path.isdir(before):
            continue
        if not os.path.isdir(after):
            print(f"{name}: missing in {after_root}")
            same_everywhere = False
            continue
        csv_same = rows(os.path.join(before, "metrics.csv")) == rows(os.path.join(after, "metrics.csv"))
        sa = strip(json.load(open(os.path.join(before, "summary.json"))))
        sb = strip(json.load(open(os.path.join(after, "summary.json"))))
        same_everywhere &= csv_same and sa == sb
        ev = sa.get("eval", {})
        kl = sa.get("ebm", {}).get("kl_calibrated")
        figures = "".join(
            f", {label} {ev[key]:{spec}}"
            for label, key, spec in (("SWD", "swd", ".4f"), ("MMD²", "mmd2", ".5f"))
            if isinstance(ev.get(key), (int, float))
        )
        print(
            f"{name}: metrics.csv {'identical' if csv_same else 'DIFFERENT'}, "
            f"summary.json {'identical' if sa == sb else 'DIFFERENT'}"
            + figures
            + (f", KL {kl:.3f}" if kl is not None else "")
        )
    print("ALL IDENTICAL" if same_everywhere else "SOME DIFFER")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
