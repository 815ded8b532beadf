"""Reads a run directory's event files with TensorBoard's own reader (EventAccumulator)
and checks them against the run's metrics.csv: every scalar of every row is in the
events at the same step with the same value (f32), and the events hold nothing else.

    python scripts/tensorboard_check.py RUN_DIR [--hparams KEY=VALUE...]

With --hparams it also checks TensorBoard's HParams plugin data (each KEY=VALUE among the
run's session-start hyperparameters, a successful session end) and the config text, and
prints the hyperparameters as the HParams dashboard gets them.

Used by .ci/run on a run written by examples/custom_agent.rs through the Trainer
(killed and resumed, so its events span several files), and on a `dgym train` run.
"""

import csv
import math
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def check_hparams(acc, run_dir, expected):
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.session_start_info.hparams.items()
    }
    for item in expected:
        key, value = item.split("=", 1)
        got = hparams.get(key)
        if str(got) != value and not (isinstance(got, float) and float(value) == got):
            print(f"{run_dir}: hparam {key} = {got!r}, expected {value}")
            return 1
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    if end.session_end_info.status != api_pb2.STATUS_SUCCESS:
        print(f"{run_dir}: session end status {end.session_end_info.status}")
        return 1
    if "config" not in acc.PluginTagToContent("text"):
        print(f"{run_dir}: no config text")
        return 1
    shown = ", ".join(f"{k}={hparams[k]}" for k in sorted(hparams)[:6])
    print(f"{run_dir}: HParams plugin: {len(hparams)} hyperparameters ({shown}, ...), "
          f"session ended with success; config text present")
    return 0


def main(run_dir, expected_hparams=None):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    events = {}
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            events[(tag, e.step)] = e.value
    expected = {}
    with open(f"{run_dir}/metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, value in row.items():
                if key in ("step", "phase") or value == "":
                    continue
                expected[(key, step)] = f32(float(value))
    missing = [k for k in expected if k not in events]
    extra = [k for k in events if k not in expected]
    wrong = [
        (k, expected[k], events[k])
        for k in expected
        if k in events and not math.isclose(events[k], expected[k], rel_tol=1e-6, abs_tol=1e-12)
    ]
    if missing or extra or wrong:
        print(f"{run_dir}: {len(missing)} missing, {len(extra)} extra, {len(wrong)} different")
        print("  missing:", missing[:5], "extra:", extra[:5], "different:", wrong[:5])
        return 1
    tags = sorted({t for t, _ in events})
    print(f"{run_dir}: TensorBoard's EventAccumulator reads {len(events)} scalars "
          f"({len(tags)} tags) matching metrics.csv")
    if expected_hparams is not None:
        return check_hparams(acc, run_dir, expected_hparams)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--hparams" in args:
        i = args.index("--hparams")
        sys.exit(main(args[0], args[i + 1:]))
    sys.exit(main(args[0]))
