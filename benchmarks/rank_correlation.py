"""Rank correlation of supernet ratings with standalone accuracy: BossNAS vs. supervised SPOS (issue 4).

1. Sample ``--archs`` distinct architectures of a block-wise space (seeded) and train each from scratch with one
   recipe (``nas.train.Trainer``/``fit`` on the space's ``build()``); record its test accuracy.
2. Train a supervised SPOS supernet (``SPOSStrategy.train_supernet``) and rate every architecture by its
   inherited-weight validation accuracy after BatchNorm recalibration (``SPOSStrategy.score``).
3. Train the block-wise self-supervised BossNAS supernet (``BossNASStrategy.train_supernet``) for the same number of
   images seen (SPOS epochs = blocks x BossNAS epochs per block) and rate every architecture
   (``BossNASStrategy.score_architectures``: sum over blocks of (block loss + 4), lower is better).
4. Report Kendall tau and Spearman rho (scipy.stats) of each rating against the trained accuracies, signed so that
   higher = the rating agrees with the accuracies; params and MACs are reported as trivial baselines.

Default study: BossNAS's MBConv space (``bossnas-mbconv``, the space of the paper's ranking study) at width 0.25 on
the procedural ``shapes`` data at 16x16 with 1000 training images (accuracies spread over 25-40 %, not ~99 % as on
digits), 12 architectures trained twice (two seeds) for 8 epochs each; the supernets see 10 epochs of the same images
(BossNAS: 2 epochs per block). Ratings use the validation split, the ground truth the test split; with two repeats
the agreement of the two standalone trainings is reported too (the noise ceiling of any rating). ``--quick`` is a
tiny smoke run (4 architectures on 8x8 digits, one repeat).

    python benchmarks/rank_correlation.py [--archs 12] [--epochs 8] [--repeats 2] [--block-epochs 2] [--json out.json]
    python benchmarks/rank_correlation.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.data import DataSplits, load_dataset
from nas.events import Event, EventType, Reporter
from nas.space import MacroBase, SearchSpace, get_space
from nas.spec import DatasetSpec, TrainSpec
from nas.strategies.base import SearchContext, get_strategy
from nas.train import Trainer, evaluate, fit

log = logging.getLogger("rank_correlation")

# small networks for 8-32 px data (widths and heads scaled down from the ImageNet defaults)
DEFAULT_MACROS: dict[str, dict[str, Any]] = {
    "bossnas-mbconv": {"stem_stride": 1, "width_mult": 0.25, "head_channels": 64},
    "hytra": {"stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 4},
}

# the BossNAS paper's rank correlations of its ratings with trained accuracy (shared/specs/hytra.md section 3)
PUBLISHED = {
    "bossnas-mbconv (ImageNet)": {"kendall_tau": 0.65, "spearman_rho": 0.78},
    "NATS-Bench size space (CIFAR-10)": {"kendall_tau": 0.53, "spearman_rho": 0.73},
}


@dataclass
class StudyConfig:
    """Everything that decides the study's result (written into the JSON)."""

    space: str = "bossnas-mbconv"
    macro: dict[str, Any] | None = None  # None: DEFAULT_MACROS[space]; image_size is filled from the data
    dataset: str = "shapes"
    image_size: int = 16
    num_samples: int = 3000  # shapes only
    limit: int | None = 1000  # training images (validation and test sets are not limited)
    archs: int = 12
    epochs: int = 8  # standalone training of every architecture
    repeats: int = 2  # standalone trainings per architecture (different seeds; the accuracy is their mean)
    block_epochs: int = 2  # BossNAS epochs per block; SPOS trains blocks x block_epochs epochs
    batch_size: int = 64  # standalone, SPOS and BossNAS
    lr: float = 0.05  # SGD (standalone and SPOS)
    boss_lr: float = 0.3  # LARS, per 256 images (BossNAS's public 4.8 at 4096)
    spos_bn_batches: int = 4
    rating_batches: int | None = 1  # BossNAS: validation batches a path is rated on (None: all)
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    extra_boss_options: dict[str, Any] = field(default_factory=dict)

    def macro_dict(self) -> dict[str, Any]:
        macro = dict(DEFAULT_MACROS.get(self.space, {}) if self.macro is None else self.macro)
        macro.setdefault("image_size", self.image_size)
        return macro


QUICK = {
    "repeats": 1,
    "dataset": "digits",
    "image_size": 8,
    "limit": 100,
    "archs": 4,
    "epochs": 2,
    "block_epochs": 1,
    "batch_size": 16,
    "rating_batches": 1,
    "eval_batch_size": 32,
}


# ------------------------------------------------------------------------------------------------- pieces
class LogReporter(Reporter):
    """Logs phase ends and epochs (INFO) so a long study shows where it is, and sums the wall-clock of each phase
    (``seconds``: phase name -> seconds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def emit(self, event: Event) -> None:
        phase = event.phase or ""
        if event.type == EventType.PHASE_STARTED:
            self._started[phase] = time.perf_counter()
        if event.type == EventType.PHASE_FINISHED and phase in self._started:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - self._started.pop(phase)
        if event.type in (EventType.PHASE_FINISHED, EventType.EPOCH):
            metrics = {k: round(v, 4) for k, v in (event.metrics or {}).items()}
            log.info("%s %s %s", event.type.value, phase, metrics)

    def total(self, prefix: str) -> float:
        """Seconds spent in the phases whose name starts with ``prefix``."""
        return sum(v for k, v in self.seconds.items() if k.startswith(prefix))


def sample_architectures(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    """``n`` distinct architectures (by hash), sampled with ``random.Random(seed)``."""
    rng = random.Random(seed)
    archs: dict[str, Architecture] = {}
    for _ in range(1000 * n):
        arch = space.sample(rng)
        archs.setdefault(arch.hash, arch)
        if len(archs) == n:
            return list(archs.values())
    raise ValueError(f"archs: the space {space.name!r} gave only {len(archs)} distinct architectures, {n} asked")


def recipe(cfg: StudyConfig, epochs: int) -> TrainSpec:
    """The one supervised recipe: SGD + Nesterov, cosine schedule, the loader's augmentation."""
    return TrainSpec.model_validate({"epochs": epochs, "batch_size": cfg.batch_size, "lr": cfg.lr})


def train_standalone(
    space: SearchSpace, macro: MacroBase, data: DataSplits, arch: Architecture, cfg: StudyConfig, seed: int
) -> float:
    """Test accuracy of ``arch`` trained from scratch for ``cfg.epochs`` epochs."""
    device = torch.device(cfg.device)
    torch.manual_seed(seed)
    net = space.build(arch, macro)
    loader = data.loader("train", cfg.batch_size, shuffle=True, augment=True, device=device, seed=seed)
    trainer = Trainer(net, recipe(cfg, cfg.epochs), device, len(loader))
    fit(trainer, loader, epochs=cfg.epochs, phase="standalone", reporter=Reporter())
    test = data.loader("test", cfg.eval_batch_size, shuffle=False, augment=False, device=device)
    return evaluate(trainer.model, test, device)["accuracy"]


def correlation(ratings: Sequence[float], accuracies: Sequence[float], higher_is_better: bool) -> dict[str, Any]:
    """Kendall tau (tau-b) and Spearman rho of ``ratings`` against ``accuracies``, signed so that a positive value
    means the rating ranks like the accuracies. Undefined values (a constant input) are None."""
    from scipy import stats

    signed = [r if higher_is_better else -r for r in ratings]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: reported as None below
        tau = stats.kendalltau(signed, accuracies)
        rho = stats.spearmanr(signed, accuracies)

    def finite(v: Any) -> float | None:
        v = float(v)
        return v if math.isfinite(v) else None

    return {
        "kendall_tau": finite(tau.statistic),
        "kendall_p": finite(tau.pvalue),
        "spearman_rho": finite(rho.statistic),
        "spearman_p": finite(rho.pvalue),
    }


def machine_info(device: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
    }


# ------------------------------------------------------------------------------------------------- the study
def run_study(
    cfg: StudyConfig, workdir: Path | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the whole study and return its results (see the module docstring and ``format_table``)."""
    say = progress or log.info
    started = time.perf_counter()
    load_start = os.getloadavg()
    device = torch.device(cfg.device)
    space = get_space(cfg.space)
    blocks = space.blocks()
    if not blocks:
        raise ValueError(f"space: {cfg.space!r} is not block-wise; allowed: bossnas-mbconv, hytra")
    spec = {"name": cfg.dataset, "image_size": cfg.image_size, "limit": cfg.limit, "num_samples": cfg.num_samples}
    data = load_dataset(DatasetSpec.model_validate({**spec, "seed": cfg.seed}))
    macro = space.macro(cfg.macro_dict(), num_classes=data.num_classes, in_channels=data.channels)
    archs = sample_architectures(space, cfg.archs, cfg.seed)
    timings: dict[str, float] = {}
    reporter = LogReporter()
    tmp = tempfile.TemporaryDirectory(prefix="rank-corr-") if workdir is None else None
    root = Path(tmp.name) if tmp is not None else Path(workdir)  # type: ignore[arg-type]

    def context(name: str) -> SearchContext:
        return SearchContext(
            space=space, macro=macro, data=data, device=device, checkpoints=CheckpointStore(root / name),
            reporter=reporter, seed=cfg.seed,
        )  # fmt: skip

    try:
        # 1. standalone ground truth
        t0 = time.perf_counter()
        runs: list[list[float]] = []  # per architecture, one test accuracy per repeat
        for i, arch in enumerate(archs):
            seeds = [cfg.seed + 1000 * r + i for r in range(cfg.repeats)]
            runs.append([train_standalone(space, macro, data, arch, cfg, s) for s in seeds])
            elapsed = time.perf_counter() - t0
            say(f"standalone {i + 1}/{len(archs)}: test accuracy {runs[-1]} ({elapsed:.0f} s)")
        accuracies = [sum(r) / len(r) for r in runs]
        timings["standalone_s"] = time.perf_counter() - t0

        # 2. SPOS, supervised, for the same number of images seen
        spos_epochs = len(blocks) * cfg.block_epochs
        spos = get_strategy(
            "spos",
            {
                "epochs": spos_epochs,
                "train": recipe(cfg, spos_epochs).model_dump(),
                "bn_batches": cfg.spos_bn_batches,
                "eval_batch_size": cfg.eval_batch_size,
            },
        )
        ctx = context("spos")
        t0 = time.perf_counter()
        supernet = spos.train_supernet(ctx)  # type: ignore[attr-defined]
        timings["spos_train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        supernet.to(device)
        spos_scores = [float(spos.score(ctx, supernet, arch)) for arch in archs]  # type: ignore[attr-defined]
        timings["spos_score_s"] = time.perf_counter() - t0
        say(f"SPOS: trained {timings['spos_train_s']:.0f} s, scored {timings['spos_score_s']:.0f} s")
        del supernet

        # 3. BossNAS, block-wise self-supervised, same images seen
        from nas.strategies.bossnas import BossNASStrategy

        boss = BossNASStrategy(
            {
                "mode": "sequential",
                "epochs_per_block": cfg.block_epochs,
                "warmup_epochs": cfg.block_epochs / 6,  # the public 1 of 6 epochs per block
                "batch_size": cfg.batch_size,
                "lr": cfg.boss_lr,
                "rating_batches": cfg.rating_batches,
                "eval_batch_size": cfg.eval_batch_size,
                **cfg.extra_boss_options,
            }
        )
        ctx = context("bossnas")
        t0 = time.perf_counter()
        net = boss.train_supernet(ctx)
        timings["bossnas_train_s"] = time.perf_counter() - t0
        timings["bossnas_block_training_s"] = reporter.total("block-")  # parts of bossnas_train_s
        timings["bossnas_block_rating_s"] = reporter.total("rating-")
        t0 = time.perf_counter()
        boss_scores = [float(s) for s in boss.score_architectures(ctx, net, archs)]
        timings["bossnas_score_s"] = time.perf_counter() - t0
        say(f"BossNAS: trained and rated {timings['bossnas_train_s']:.0f} s, scored {timings['bossnas_score_s']:.0f} s")
        boss_timings = {k: float(v) for k, v in getattr(net, "timings", {}).items()}
        del net

        costs = [context("costs").costs(arch) for arch in archs]
    finally:
        if tmp is not None:
            tmp.cleanup()
    timings["total_s"] = time.perf_counter() - started

    rows = [
        {
            "index": i,
            "hash": arch.hash[:12],
            "choices": arch.choices,
            "params": int(c["params"]),
            "macs": int(c["macs"]),
            "test_accuracy": acc,
            "test_accuracy_runs": r,
            "spos_val_accuracy": s,
            "bossnas_score": b,
        }
        for i, (arch, c, acc, r, s, b) in enumerate(
            zip(archs, costs, accuracies, runs, spos_scores, boss_scores, strict=True)
        )
    ]
    correlations = {
        "spos": correlation(spos_scores, accuracies, higher_is_better=True),
        "bossnas": correlation(boss_scores, accuracies, higher_is_better=False),
        "params": correlation([row["params"] for row in rows], accuracies, higher_is_better=True),
        "macs": correlation([row["macs"] for row in rows], accuracies, higher_is_better=True),
    }
    if cfg.repeats > 1:  # the noise ceiling: how well one standalone training ranks like another (other seeds)
        correlations["repeat_agreement"] = correlation([r[0] for r in runs], [r[1] for r in runs], True)
    n_train = len(data.train.y)
    return {
        "benchmark": "rank_correlation",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(cfg.device),
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "config": {**dataclasses.asdict(cfg), "macro": cfg.macro_dict()},
        "data": {
            "name": data.name,
            "image_size": data.image_size,
            "classes": data.num_classes,
            "train": n_train,
            "val": len(data.val.y),
            "test": len(data.test.y),
        },
        "budget": {
            "blocks": len(blocks),
            "spos_epochs": len(blocks) * cfg.block_epochs,
            "bossnas_epochs_per_block": cfg.block_epochs,
            "images_seen_spos": len(blocks) * cfg.block_epochs * n_train,
            "images_seen_bossnas": len(blocks) * cfg.block_epochs * n_train,
            "note": "same images seen; BossNAS passes each image as 2 views through 4 paths (online and target)",
        },
        "architectures": rows,
        "correlations": correlations,
        "published": PUBLISHED,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "bossnas_timings": {k: round(v, 1) for k, v in boss_timings.items()},
    }


# ------------------------------------------------------------------------------------------------- output
def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:+.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables: per architecture, correlations (with the published ones), timings."""
    lines = [
        "| # | arch (hash) | params | MACs | test acc | SPOS val acc | BossNAS score (lower better) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["architectures"]:
        lines.append(
            f"| {r['index']} | {r['hash']} | {r['params']:,} | {r['macs']:,} | {r['test_accuracy']:.4f} | "
            f"{r['spos_val_accuracy']:.4f} | {r['bossnas_score']:.4f} |"
        )
    lines += ["", "| rating | Kendall tau | Spearman rho |", "|---|---|---|"]
    for name, c in result["correlations"].items():
        lines.append(f"| {name} (this run) | {_fmt(c['kendall_tau'])} | {_fmt(c['spearman_rho'])} |")
    for name, c in result["published"].items():
        lines.append(f"| BossNAS published, {name} | {c['kendall_tau']:.2f} | {c['spearman_rho']:.2f} |")
    t = result["timings"]
    lines += [
        "",
        "wall-clock (s): " + ", ".join(f"{k} {v}" for k, v in t.items()),
        f"machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, {result['machine']['device']}; "
        f"date {result['date']}; load average start {result['load_average']['start']}, "
        f"end {result['load_average']['end']}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StudyConfig()
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (about 2 minutes on 2 CPU cores)")
    parser.add_argument("--space", default=d.space, choices=sorted(DEFAULT_MACROS))
    parser.add_argument("--macro", default=None, help="JSON macro of the space (default: a small network)")
    parser.add_argument("--dataset", default=None, help=f"built-in dataset (default {d.dataset})")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=None, help="images generated by 'shapes'")
    parser.add_argument("--limit", type=int, default=None, help="training images (0: all)")
    parser.add_argument("--archs", type=int, default=None, help=f"architectures (default {d.archs})")
    parser.add_argument("--epochs", type=int, default=None, help=f"standalone epochs (default {d.epochs})")
    parser.add_argument("--repeats", type=int, default=None, help="standalone trainings per architecture")
    parser.add_argument(
        "--block-epochs", type=int, default=None, help="BossNAS epochs per block; SPOS trains blocks x this"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="SGD learning rate (standalone, SPOS)")
    parser.add_argument("--rating-batches", type=int, default=None, help="BossNAS rating batches (0: all)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress log")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.macro is not None:
        values["macro"] = json.loads(args.macro)
    for name in (
        "space", "dataset", "image_size", "num_samples", "archs", "epochs", "repeats", "block_epochs", "batch_size",
        "lr", "seed", "device",
    ):  # fmt: skip
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.limit is not None:
        values["limit"] = args.limit or None
    if args.rating_batches is not None:
        values["rating_batches"] = args.rating_batches or None
    return StudyConfig(**values), args


def main(argv: Sequence[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if cfg.archs < 3:
        raise SystemExit("--archs: at least 3 architectures are needed for a rank correlation")
    result = run_study(cfg)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
