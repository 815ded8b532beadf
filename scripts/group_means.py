#!/usr/bin/env python3
"""Mean ± sample std over seeds of a `dgym compare` CSV, grouping runs whose names differ only
in a trailing `-s<seed>` (e.g. gcd-s0, gcd-s1, gcd-s2 -> gcd). Standard library only.

    scripts/group_means.py runs/gcd-vs-ipm/compare.csv [metric ...] > groups.md
"""
import csv
import re
import statistics
import sys
from collections import OrderedDict


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{sys.argv[1]}: no runs", file=sys.stderr)
        return 1
    metrics = sys.argv[2:] or [c for c in rows[0] if c != "run"]
    missing = [m for m in metrics if m not in rows[0]]
    if missing:
        print(f"{sys.argv[1]}: no column {', '.join(missing)}", file=sys.stderr)
        return 1
    groups: "OrderedDict[str, list]" = OrderedDict()
    for row in rows:
        name = re.sub(r"-s\d+$", "", row["run"].rstrip("/").split("/")[-1])
        groups.setdefault(name, []).append(row)
    print("| runs | n | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for name, members in groups.items():
        cells = []
        for m in metrics:
            values = [float(r[m]) for r in members if r[m] != ""]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
        print(f"| {name} | {len(members)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
