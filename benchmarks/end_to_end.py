"""End-to-end time of the README's main command (a real SPOS search on digits, retraining and export).

python benchmarks/end_to_end.py [--spec examples/digits-spos.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="examples/digits-spos.yaml")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="nas-e2e-")) / "run"
    nas = shutil.which("nas", path=str(Path(sys.executable).parent)) or "nas"
    start = time.perf_counter()
    subprocess.run([nas, "search", args.spec, "--local", "--output", str(out), "--quiet"], check=True)
    elapsed = time.perf_counter() - start
    result = json.loads((out / "result.json").read_text())
    final = result["final"][0]
    summary = {
        "benchmark": "end_to_end",
        "spec": args.spec,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "wall_s": round(elapsed, 1),
        "test_accuracy": final["metrics"]["test_accuracy"],
        "params": final["metrics"]["params"],
        "macs": final["metrics"]["macs"],
        "arch_dir": final["directory"].rsplit("/", 1)[-1],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
