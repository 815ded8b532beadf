"""Prints the HParams view of a sweep directory as TensorBoard reads it: for every run
with event files, the hyperparameters of its session-start record (those that differ
between runs) and the last value of each `eval/*` scalar, through TensorBoard's own
EventAccumulator and HParams protos.

    python scripts/hparams_table.py SWEEP_DIR
"""

import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def runs(root):
    for parent, _, files in sorted(os.walk(root)):
        if any(f.startswith("events.out.tfevents") for f in files):
            yield parent


def read(run):
    acc = event_accumulator.EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {
        k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()
    }
    metrics = {
        tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("eval/")
    }
    return hparams, metrics


def main(root):
    table = [(os.path.relpath(run, root), *read(run)) for run in runs(root)]
    if not table:
        print(f"{root}: no runs with event files")
        return 1
    keys = sorted({k for _, h, _ in table for k in h})
    varying = [k for k in keys if len({str(h.get(k)) for _, h, _ in table}) > 1]
    metrics = sorted({m for _, _, ms in table for m in ms})
    print("| run | " + " | ".join(varying + metrics) + " |")
    print("|---" * (1 + len(varying) + len(metrics)) + "|")
    for name, h, ms in table:
        cells = [str(h.get(k)) for k in varying] + [f"{ms[m]:.4g}" if m in ms else "" for m in metrics]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"({len(table)} runs, {len(keys)} hyperparameters each, {len(varying)} varying)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
