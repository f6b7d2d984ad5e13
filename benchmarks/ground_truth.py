"""Ground truth of a search space on a task: architectures trained from scratch, several seeds each (issue 9, item 2).

1. Sample ``--archs`` distinct architectures of a space (seeded; NASNet with the demo's 6 ops and macro, HyTra with
   the small macro of ``benchmarks/rank_correlation.py``).
2. Train each from scratch with ``--seeds`` seeds and one recipe (``nas.train.Trainer``/``fit``: AdamW, cosine
   schedule, no augmentation by default) and record the test accuracy of every seed.
3. Qualify the table: the two first seeds must rank the architectures alike (Kendall tau >= 0.7, scipy) and the
   architectures must differ (the 90th minus the 10th percentile of the mean test accuracy >= 10 points).

Defaults (calibrated for a shared 2-core CPU, about 1-2 minutes per training on one thread): ``pathfinder`` at
12x12 with 2,000 training images and 750 test images, 2 epochs of AdamW (lr 0.003, batch 16, cosine, no
augmentation). One epoch left the architectures in the middle of their jump from chance, 5-14 points apart between
seeds; curves of 0.6-1.2 of the side kept them at 52-66 %. On a GPU raise ``--image-size``, ``--num-samples``,
``--limit`` and ``--epochs``.

The result is a versioned JSON file (``benchmarks/results/ground_truth_<space>_<dataset><size>.json`` by default).
The run is resumable: rows already in the output file for the same config (the number of architectures aside) are
kept and not trained again, and the file is rewritten after every architecture. Progress goes to stderr.

    python benchmarks/ground_truth.py --space nasnet [--archs 24] [--seeds 2] [--epochs 2] [--json PATH]
    python benchmarks/ground_truth.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

from benchmarks.rank_correlation import DEFAULT_MACROS, machine_info, sample_architectures
from nas.arch import Architecture
from nas.data import DataSplits, load_dataset
from nas.events import Reporter
from nas.measure import count_costs
from nas.space import SearchSpace, get_space
from nas.spec import DatasetSpec, TrainSpec
from nas.train import Trainer, evaluate, fit

log = logging.getLogger("ground_truth")

VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
MIN_TAU = 0.7  # Kendall tau between the first two seeds
MIN_SPREAD = 0.10  # p90 - p10 of the mean test accuracy

# the demo's NASNet (examples/digits-spos.yaml): 6 DARTS-style ops, 5 cells of 16 filters, CIFAR stem
SPACES: dict[str, dict[str, Any]] = {
    "nasnet": {
        "options": {
            "ops": ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
        },
        "macro": {"kind": "nasnet", "stem": "cifar", "cells_per_stack": 1, "filters": 16, "stem_multiplier": 1},
    },
    "hytra": {"options": {}, "macro": DEFAULT_MACROS["hytra"]},
}


@dataclass
class GroundTruthConfig:
    """Everything that decides the table (written into the JSON; a resumed run must match it)."""

    space: str = "nasnet"
    dataset: str = "pathfinder"
    image_size: int = 12
    num_samples: int = 5000  # 3400 train + val, 750 test
    limit: int | None = 2000  # training images
    archs: int = 24
    seeds: int = 2
    epochs: int = 2
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 0.003
    weight_decay: float = 0.0001
    augment: bool = False
    eval_batch_size: int = 256
    seed: int = 0  # architecture sampling and the dataset
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # empty: the defaults of SPACES[space]
    macro: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space: {self.space!r}; allowed: {', '.join(SPACES)}")
        self.options = self.options or dict(SPACES[self.space]["options"])
        self.macro = self.macro or {**SPACES[self.space]["macro"], "image_size": self.image_size}

    def dataset_spec(self) -> DatasetSpec:
        spec = {"name": self.dataset, "image_size": self.image_size, "limit": self.limit, "seed": self.seed}
        if self.dataset in ("shapes", "pathfinder"):
            spec["num_samples"] = self.num_samples
        return DatasetSpec.model_validate(spec)

    def recipe(self) -> TrainSpec:
        """The one training recipe of every architecture and seed (warm-up free, cosine schedule)."""
        return TrainSpec.model_validate({
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
            "weight_decay": self.weight_decay, "augment": self.augment,
        })  # fmt: skip

    def record(self) -> dict[str, Any]:
        """The ``config`` block of the result file."""
        return {
            "space": self.space,
            "options": self.options,
            "macro": self.macro,
            "dataset": self.dataset_spec().model_dump(mode="json"),
            "recipe": self.recipe().model_dump(mode="json"),
            "archs": self.archs,
            "seeds": self.seed_list(),
            "sample_seed": self.seed,
            "device": self.device,
        }

    def seed_list(self) -> list[int]:
        return [1 + s for s in range(self.seeds)]


QUICK = {"dataset": "pathfinder", "image_size": 12, "num_samples": 200, "archs": 3, "seeds": 2, "epochs": 1}


# ------------------------------------------------------------------------------------------------- pieces
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def qualification(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seed agreement (Kendall tau of seed 1 against seed 2 over the architectures, with its p-value) and spread
    (p90 - p10 of the mean test accuracy); ``qualifies`` when tau >= MIN_TAU and spread >= MIN_SPREAD."""
    from scipy import stats

    means = [float(r["mean"]) for r in rows]
    tau: float | None = None
    p: float | None = None
    if len(rows) >= 3 and all(len(r["test_accuracy"]) >= 2 for r in rows):
        result = stats.kendalltau([r["test_accuracy"][0] for r in rows], [r["test_accuracy"][1] for r in rows])
        tau = float(result.statistic) if math.isfinite(result.statistic) else None
        p = float(result.pvalue) if math.isfinite(result.pvalue) else None
    p10, p90 = (percentile(means, 10), percentile(means, 90)) if means else (0.0, 0.0)
    spread = p90 - p10
    return {
        "seed_tau": tau,
        "p": p,
        "p10": p10,
        "p90": p90,
        "spread": spread,
        "min_tau": MIN_TAU,
        "min_spread": MIN_SPREAD,
        "qualifies": tau is not None and tau >= MIN_TAU and spread >= MIN_SPREAD,
    }


def costs(space: SearchSpace, macro: Any, arch: Architecture, data: DataSplits) -> tuple[int, int]:
    """Params and MACs of the standalone network (counted on the meta device)."""
    shape = (1, data.channels, data.image_size, data.image_size)
    counted = count_costs(lambda: space.build(arch, macro), shape)
    return int(counted["params"]), int(counted["macs"])


def train_one(
    space: SearchSpace, macro: Any, data: DataSplits, arch: Architecture, cfg: GroundTruthConfig, seed: int
) -> float:
    """Test accuracy of ``arch`` trained from scratch with ``cfg.recipe()`` and ``seed`` (weights and batch order)."""
    device = torch.device(cfg.device)
    spec = cfg.recipe()
    torch.manual_seed(seed)
    net = space.build(arch, macro)
    loader = data.loader("train", spec.batch_size, shuffle=True, augment=spec.augment, device=device, seed=seed)
    trainer = Trainer(net, spec, device, len(loader))
    fit(trainer, loader, epochs=spec.epochs, phase="standalone", reporter=Reporter())
    test = data.loader("test", cfg.eval_batch_size, shuffle=False, augment=False, device=device)
    return float(evaluate(trainer.model, test, device)["accuracy"])


def load_rows(path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier run of the same ``config`` at ``path`` (none if the file is absent or differs in
    anything but the number of architectures: a longer run continues a shorter one's rows)."""
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    same = {k: v for k, v in config.items() if k != "archs"}  # a row does not depend on how many there are
    if old.get("version") != VERSION or {k: v for k, v in old.get("config", {}).items() if k != "archs"} != same:
        log.warning("%s holds another config: starting over", path)
        return []
    return list(old.get("rows", []))


def result(cfg: GroundTruthConfig, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {
        "version": VERSION,
        "benchmark": "ground_truth",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(cfg.device),
        "config": cfg.record(),
        "rows": rows,
        "qualification": qualification(rows),
        "train_seconds": round(seconds, 1),
    }


def default_path(cfg: GroundTruthConfig) -> Path:
    return RESULTS / f"ground_truth_{cfg.space}_{cfg.dataset}{cfg.image_size}.json"


# ------------------------------------------------------------------------------------------------- the run
def run(cfg: GroundTruthConfig, path: Path | None, say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Train the table (continuing the rows already in ``path`` for the same config) and return the result; the
    file, when given, is rewritten after every architecture."""
    space = get_space(cfg.space, **cfg.options)
    t0 = time.perf_counter()
    data = load_dataset(cfg.dataset_spec())
    say(f"data {data.name} {data.sizes()} at {data.image_size} px loaded in {time.perf_counter() - t0:.1f} s")
    macro = space.macro(cfg.macro, num_classes=data.num_classes, in_channels=data.channels)
    archs = sample_architectures(space, cfg.archs, cfg.seed)
    config = cfg.record()
    done = {r["arch"]: r for r in (load_rows(path, config) if path else [])}
    rows: list[dict[str, Any]] = []
    spent = 0.0
    for i, arch in enumerate(archs):
        if arch.hash in done:
            rows.append(done[arch.hash])
            say(f"arch {i + 1}/{len(archs)} {arch.hash}: kept {done[arch.hash]['test_accuracy']}")
            continue
        params, macs = costs(space, macro, arch, data)
        accs: list[float] = []
        seconds: list[float] = []
        for s in cfg.seed_list():
            t1 = time.perf_counter()
            accs.append(train_one(space, macro, data, arch, cfg, s))
            seconds.append(round(time.perf_counter() - t1, 1))
        spent += sum(seconds)
        rows.append({
            "arch": arch.hash, "choices": arch.choices, "params": params, "macs": macs, "test_accuracy": accs,
            "mean": sum(accs) / len(accs), "seconds": seconds,
        })  # fmt: skip
        say(f"arch {i + 1}/{len(archs)} {arch.hash}: {params:,} params, test accuracy {accs} ({sum(seconds):.0f} s)")
        if path is not None:
            write(path, result(cfg, rows, spent))
    out = result(cfg, rows, spent)
    if path is not None:
        write(path, out)
    return out


def write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def summary(out: dict[str, Any]) -> str:
    q = out["qualification"]
    tau = "n/a" if q["seed_tau"] is None else f"{q['seed_tau']:.3f} (p {q['p']:.2g})"
    return (
        f"{len(out['rows'])} architectures: seed tau {tau}, p10 {q['p10']:.3f}, p90 {q['p90']:.3f}, "
        f"spread {q['spread']:.3f}; qualifies: {q['qualifies']}"
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[GroundTruthConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = GroundTruthConfig()
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (3 archs, 12 px, 1 epoch)")
    parser.add_argument("--space", default=None, choices=sorted(SPACES), help=f"default {d.space}")
    parser.add_argument("--dataset", default=None, help=f"built-in dataset (default {d.dataset})")
    parser.add_argument("--image-size", type=int, default=None, help=f"default {d.image_size}")
    parser.add_argument("--num-samples", type=int, default=None, help=f"generated images (default {d.num_samples})")
    parser.add_argument("--limit", type=int, default=None, help="training images (0: all)")
    parser.add_argument("--archs", type=int, default=None, help=f"architectures (default {d.archs})")
    parser.add_argument("--seeds", type=int, default=None, help=f"trainings per architecture (default {d.seeds})")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--optimizer", default=None, choices=["sgd", "adamw"])
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int, default=None, help="architecture sampling and data seed")
    parser.add_argument("--macro", default=None, help="JSON macro (default: the space's small macro)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--json", default=None, help="result file (default benchmarks/results/ground_truth_...)")
    parser.add_argument("--no-json", action="store_true", help="write no file")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in (
        "space", "dataset", "image_size", "num_samples", "archs", "seeds", "epochs", "batch_size", "lr", "optimizer",
        "augment", "seed", "device",
    ):  # fmt: skip
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.limit is not None:
        values["limit"] = args.limit or None
    if args.macro is not None:
        values["macro"] = json.loads(args.macro)
    cfg = GroundTruthConfig(**values)
    if cfg.seeds < 1 or cfg.archs < 1:
        parser.error("--archs and --seeds must be at least 1")
    return cfg, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    path = None if args.no_json else Path(args.json) if args.json else default_path(cfg)
    started = time.perf_counter()
    out = run(cfg, path, say=lambda m: print(m, file=sys.stderr, flush=True))
    print(summary(out))
    print(f"wall time {time.perf_counter() - started:.0f} s" + (f"; written to {path}" if path else ""))
    return out


if __name__ == "__main__":
    main()
