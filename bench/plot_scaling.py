"""Draws one scaling figure from bench/scaling.sh's reports: seconds per iteration of each
row against the axis, one line per implementation, and prints the table behind it.

    python bench/plot_scaling.py AXIS REPORT_DIR OUT.png
"""

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"batch": "batch size", "steps": "denoising steps T", "dim": "data dimension d",
          "threads": "threads"}
NAMES = {"denoise-gym": "dgym", "pytorch-eager": "PyTorch eager"}


def main(axis, report_dir, out_png):
    points = {}  # (row, implementation) -> [(x, seconds, peak MiB)]
    for path in sorted(glob.glob(os.path.join(report_dir, "*.json"))):
        value = int(os.path.basename(path).rsplit("-", 1)[1][:-5])
        report = json.load(open(path))
        impl = NAMES.get(report["implementation"], report["implementation"])
        for row in report["rows"]:
            x = row["batch"] if axis == "batch" else value
            label = impl if axis != "threads" else f"{impl}, batch {row['batch']}"
            points.setdefault((row["name"], label), []).append(
                (x, row["median_s"], row.get("peak_memory_mib")))
    rows = sorted({r for r, _ in points})
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    print(f"| row | implementation | {LABELS[axis]} | ms per iteration | peak MiB |")
    print("|---|---|---|---|---|")
    for ax, row in zip(axes[0], rows):
        for (name, label), series in sorted(points.items()):
            if name != row:
                continue
            series.sort()
            xs = [p[0] for p in series]
            ys = [p[1] * 1e3 for p in series]
            ax.plot(xs, ys, marker="o", label=label)
            for x, s, mib in series:
                mem = f"{mib:.0f}" if mib is not None else "–"
                print(f"| {row} | {label} | {x} | {s * 1e3:.3f} | {mem} |")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(LABELS[axis])
        ax.set_ylabel("ms per iteration (median block)")
        ax.set_title(row)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print(f"wrote {out_png}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
