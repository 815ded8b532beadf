"""What the Python peers of `dgym bench` share (standard library only): the timing loop of
experiments/src/commands/bench.rs, the peak-memory probe and the machine's CPU."""

import math
import platform
import time


def time_iterations(quick, block_seconds, iterate, synchronize=lambda: None):
    """Warm-up iterations (the compilation of a compiling peer), one iteration to size a
    block to `block_seconds`, then timed blocks; returns (repeats, iterations per block,
    fastest and median seconds per iteration, warm-up seconds). `synchronize` waits for a
    device's queued work, so that a block's time holds it."""
    warmup, repeats = (1, 2) if quick else (3, 5)
    start = time.perf_counter()
    for _ in range(warmup):
        iterate()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    iterate()
    one = max(time.perf_counter() - start, 1e-7)
    per_block = min(max(math.ceil(block_seconds / one), 1), 100_000)
    seconds = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        for _ in range(per_block):
            iterate()
        synchronize()
        seconds.append((time.perf_counter() - start) / per_block)
    seconds.sort()
    return repeats, per_block, seconds[0], seconds[len(seconds) // 2], warmup_s


def reset_peak_memory():
    """Resets Linux's peak resident memory (VmHWM) to the current one, as dgym bench does."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mib():
    """The peak resident memory since the last reset, in MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
