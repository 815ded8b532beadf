#!/usr/bin/env python3
"""Side-by-side table of dgym's bench report and its peers' (standard library only).

    python bench/compare.py bench/out/dgym.json bench/out/torch.json [bench/out/torch_compile.json] [--markdown OUT]

Rows are joined on (name, batch). Each ratio is dgym rate / peer rate (> 1: denoise-gym
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


def peer_label(report):
    return {"pytorch-eager": "torch eager", "pytorch-compile": "torch.compile", "jax-jit": "jax.jit"}.get(
        report["implementation"], report["implementation"])


def table(dgym, *peers):
    key = lambda r: (r["name"], int(r["batch"]))
    left = {key(r): r for r in dgym["rows"]}
    rights = [{key(r): r for r in peer["rows"]} for peer in peers]
    labels = [peer_label(p) for p in peers]
    order = [key(r) for r in dgym["rows"]]
    for right in rights:
        order += [k for k in right if k not in left and k not in order]
    lines = [
        "# dgym bench vs " + ", ".join(labels),
        "",
        machine_line("dgym", dgym),
    ] + [machine_line(label, peer) for label, peer in zip(labels, peers)] + [
        "",
        "ratio = dgym rate / peer rate (> 1: denoise-gym faster); times are seconds per iteration in ms;"
        " warm-up = the peer's untimed first iterations (with torch.compile: the compilation).",
        "",
        "| name | batch | T | width | unit | dgym rate | "
        + " | ".join(f"{l} rate | dgym/{l} | {l} warm-up s" for l in labels)
        + " | dgym median ms |",
        "|---|---:|---:|---:|---|---:|" + "---:|---:|---:|" * len(peers) + "---:|",
    ]
    missing, mismatched, ratios = [], [], {}
    for k in order:
        a = left.get(k)
        bs = [right.get(k) for right in rights]
        ref = a or next(b for b in bs if b)
        shape = (ref["n_steps"], ref["width"], ref["unit"])
        cells = []
        for label, b in zip(labels, bs):
            note = ""
            if a and b and (a["n_steps"], a["width"], a["unit"]) != (b["n_steps"], b["width"], b["unit"]):
                note = " ⚠"
                mismatched.append(f"{k[0]} @ {k[1]}: dgym T={a['n_steps']} width={a['width']} {a['unit']}, "
                                  f"{label} T={b['n_steps']} width={b['width']} {b['unit']}")
            if a and b:
                ratio = a["rate"] / b["rate"] if b["rate"] > 0 else float("inf")
                ratios.setdefault((label, k[0]), []).append(ratio)
                ratio_cell = f"{ratio:.2f}{note}"
            else:
                ratio_cell = "missing"
                missing.append(f"{k[0]} @ {k[1]}: {'not in ' + label if a else 'not in dgym'}")
            warm = f"{b['warmup_s']:.1f}" if b and "warmup_s" in b else "—"
            cells.append(f"{rate(b)} | {ratio_cell} | {warm}")
        lines.append(
            f"| {k[0]} | {k[1]} | {shape[0]} | {shape[1]} | {shape[2]} | {rate(a)} | "
            + " | ".join(cells)
            + f" | {ms(a['median_s']) if a else '—'} |")
    if ratios:
        lines += ["", "Geometric mean of the ratio per row (over its batches):", ""]
        for (label, name), values in ratios.items():
            gmean = math.exp(sum(math.log(v) for v in values) / len(values))
            lines.append(f"- {name}, dgym/{label}: {gmean:.2f} ({len(values)} batches)")
    if missing:
        lines += ["", "Missing rows:", ""] + [f"- {m}" for m in missing]
    if mismatched:
        lines += ["", "⚠ Rows whose T, width or unit differ (different work):", ""] + [f"- {m}" for m in mismatched]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Join bench reports on (name, batch).")
    parser.add_argument("dgym", help="dgym bench --json output")
    parser.add_argument("peers", nargs="+",
                        help="bench/torch_reference.py --json outputs (eager, --compile)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = table(load(args.dgym), *[load(p) for p in args.peers])
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
