"""Reads a run directory's event files with TensorBoard's own reader (EventAccumulator)
and checks them against the run's metrics.csv: every scalar of every row is in the
events at the same step with the same value (f32), and the events hold nothing else.

    python scripts/tensorboard_check.py RUN_DIR

Used by .ci/run on a run written by examples/gcd_custom_agent.rs through the Trainer
(killed and resumed, so its events span several files).
"""

import csv
import math
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def main(run_dir):
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
