"""Wall time of `nas info` for a large preset: counting on the meta device (the default) against the old path, which
built the network for real and timed it (now `--latency`). Runs are interleaved so both see the same machine load.

    python benchmarks/nas_info.py [--ref nasnet:nasnet-a-large] [--input-size 331] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NAS = [str(Path(sys.executable).parent / "nas")]  # the console script, as a user runs it


def timed(args: list[str]) -> tuple[float, dict[str, object]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([*NAS, *args], capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="nasnet:nasnet-a-large")
    parser.add_argument("--input-size", type=int, default=331)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    base = ["info", opts.ref, "--input-size", str(opts.input_size), "--json"]
    fast, slow = [], []
    for _ in range(opts.repeats):
        seconds, counted = timed(base)
        fast.append(seconds)
        seconds, measured = timed([*base, "--latency"])
        slow.append(seconds)
        assert (counted["params"], counted["macs"]) == (measured["params"], measured["macs"]), (counted, measured)
    row = {
        "ref": opts.ref,
        "input_size": opts.input_size,
        "params": counted["params"],
        "macs": counted["macs"],
        "counts_only_s": round(statistics.median(fast), 2),
        "with_latency_s": round(statistics.median(slow), 2),
        "ratio": round(statistics.median(slow) / statistics.median(fast), 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
