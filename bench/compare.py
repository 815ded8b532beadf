#!/usr/bin/env python3
"""Side-by-side table of two bench reports (standard library only).

    python bench/compare.py bench/out/dgym.json bench/out/torch.json [--markdown OUT]

Rows are joined on (name, batch). The ratio is dgym rate / torch rate (> 1: denoise-gym
is faster). A row present in one file only is listed as missing on the other side; a
row whose T, width or unit differ between the files is flagged (the two did different
work). Prints Markdown; --markdown also writes it to a file.
"""

import argparse
import json
import math
import sys


def load(path):
    with open(path) as f:
        report = json.load(f)
    for key in ("implementation", "machine", "rows"):
        if key not in report:
            sys.exit(f"{path}: not a bench report (no {key!r})")
    return report


def machine_line(label, report):
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))
    return (f"- {label}: `{report['implementation']}` on {m.get('cpu', '?')}: "
            f"{m.get('cores', '?')} cores, {m.get('threads', '?')} threads, "
            f"profile {m.get('profile', '?')}, device {m.get('device', '?')}; {versions}")


def rate(row):
    return f"{row['rate']:.1f}" if row else "missing"


def ms(seconds):
    return f"{seconds * 1e3:.3f}"


def table(dgym, torch):
    key = lambda r: (r["name"], int(r["batch"]))
    left = {key(r): r for r in dgym["rows"]}
    right = {key(r): r for r in torch["rows"]}
    order = [key(r) for r in dgym["rows"]] + [key(r) for r in torch["rows"] if key(r) not in left]
    lines = [
        "# dgym bench vs PyTorch eager",
        "",
        machine_line("dgym", dgym),
        machine_line("torch", torch),
        "",
        "ratio = dgym rate / torch rate (> 1: denoise-gym faster); times are seconds per iteration in ms.",
        "",
        "| name | batch | T | width | unit | dgym rate | torch rate | ratio dgym/torch "
        "| dgym min ms | dgym median ms | torch median ms |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    missing, mismatched, ratios = [], [], {}
    for k in order:
        a, b = left.get(k), right.get(k)
        ref = a or b
        shape = (ref["n_steps"], ref["width"], ref["unit"])
        note = ""
        if a and b and (a["n_steps"], a["width"], a["unit"]) != (b["n_steps"], b["width"], b["unit"]):
            note = " ⚠"
            mismatched.append(f"{k[0]} @ {k[1]}: dgym T={a['n_steps']} width={a['width']} {a['unit']}, "
                              f"torch T={b['n_steps']} width={b['width']} {b['unit']}")
        if a and b:
            ratio = a["rate"] / b["rate"] if b["rate"] > 0 else float("inf")
            ratios.setdefault(k[0], []).append(ratio)
            ratio_cell = f"{ratio:.2f}{note}"
        else:
            ratio_cell = "missing"
            missing.append(f"{k[0]} @ {k[1]}: only in {'dgym' if a else 'torch'}")
        lines.append(
            f"| {k[0]} | {k[1]} | {shape[0]} | {shape[1]} | {shape[2]} "
            f"| {rate(a)} | {rate(b)} "
            f"| {ratio_cell} | {ms(a['min_s']) if a else '—'} | {ms(a['median_s']) if a else '—'} "
            f"| {ms(b['median_s']) if b else '—'} |")
    if ratios:
        lines += ["", "Geometric mean of the ratio per row (over its batches):", ""]
        for name, values in ratios.items():
            gmean = math.exp(sum(math.log(v) for v in values) / len(values))
            lines.append(f"- {name}: {gmean:.2f} ({len(values)} batches)")
    if missing:
        lines += ["", "Missing rows:", ""] + [f"- {m}" for m in missing]
    if mismatched:
        lines += ["", "⚠ Rows whose T, width or unit differ (different work):", ""] + [f"- {m}" for m in mismatched]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Join two bench reports on (name, batch).")
    parser.add_argument("dgym", help="dgym bench --json output")
    parser.add_argument("torch", help="bench/torch_reference.py --json output")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = table(load(args.dgym), load(args.torch))
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
