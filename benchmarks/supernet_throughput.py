"""Supernet vs standalone training throughput on the same sampled architectures.

For each of K sampled NASNet architectures, train the supernet with that path active and the standalone network of
the same architecture for the same number of steps, interleaved (A, B, A, B, ...) so machine noise hits both alike.
Reports images/s of each and their ratio (supernet / standalone); 1.0 means weight sharing costs nothing.

    python benchmarks/supernet_throughput.py [--device cuda] [--archs 4] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from nas.space import get_space
from nas.spec import TrainSpec
from nas.train import Trainer


def timed_steps(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` training steps (after 3 warm-up steps)."""
    for _ in range(3):
        trainer.train_step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--archs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions per architecture")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--macro", default='{"cells_per_stack": 2, "filters": 16, "stem_multiplier": 3}')
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    space = get_space("nasnet")
    macro = space.macro(json.loads(args.macro), num_classes=10, in_channels=3)
    cfg = TrainSpec(epochs=1, batch_size=args.batch_size, lr=0.01, amp=True, channels_last=True)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if device.type == "cuda" and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rng = random.Random(0)
    torch.manual_seed(0)
    supernet = space.supernet(macro)
    sup_trainer = Trainer(supernet, cfg, device, steps_per_epoch=10**6, params=supernet.weight_parameters())
    rows: list[dict[str, Any]] = []
    for i in range(args.archs):
        arch = space.sample(rng)
        supernet.set_active(arch)
        standalone: nn.Module = space.build(arch, macro)
        alone_trainer = Trainer(standalone, cfg, device, steps_per_epoch=10**6)
        sup_t, alone_t = [], []
        for _ in range(args.rounds):
            sup_t.append(timed_steps(sup_trainer, x, y, args.steps, device))
            alone_t.append(timed_steps(alone_trainer, x, y, args.steps, device))
        images = args.steps * args.batch_size
        row = {
            "arch": arch.hash,
            "supernet_img_s": images / statistics.median(sup_t),
            "standalone_img_s": images / statistics.median(alone_t),
        }
        row["ratio"] = row["supernet_img_s"] / row["standalone_img_s"]
        rows.append(row)
        print(f"arch {i + 1}/{args.archs} {arch.hash}: supernet {row['supernet_img_s']:.1f} img/s, "
              f"standalone {row['standalone_img_s']:.1f} img/s, ratio {row['ratio']:.3f}", flush=True)  # fmt: skip
    summary = {
        "benchmark": "supernet_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "macro": macro.model_dump(),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)


if __name__ == "__main__":
    main()
