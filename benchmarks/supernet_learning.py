"""Does a supernet learn? Sampled-path training accuracy against steps, beside one fixed path's (issue 9).

For each case (a space with a one-shot strategy and a training budget) the script trains the supernet twice with the
strategy's own code (``SPOSStrategy.train_supernet``):

1. as the strategy does it: a new path every step (uniform, or FairNAS groups with ``strict_fairness``);
2. with one fixed path (the first architecture drawn with the case's seed) for every step, the ceiling.

It prints the training accuracy after each epoch for both (for FairNAS groups: the accuracy of the first path of
each group), then rates ``--paths`` random architectures with inherited weights after BatchNorm recalibration
(``SPOSStrategy.score``, validation split) and reports their median. With ``--evolution`` the NASNet demo case also
runs the strategy's evolution on the trained supernet and reports the median inherited-weight accuracy of every
candidate it rated (the population), the figure of issue 9's target.

Cases (``--cases``, comma separated):
- ``nasnet``: the main job's supernet (examples/digits-spos.yaml: NASNet cells, the 6-op set, digits 16x16,
  30 epochs = 1,050 steps), with the supernet settings of the space's defaults (identity init, normalised head);
- ``nasnet-random-init``: the same with ``options.supernet = {init: random, head_norm: false}`` (the supernet as it
  was before issue 9);
- ``nasnet-fair``: the same space with FairNAS strict fairness (groups of 6 paths per step, so 1/6 of the epochs);
- ``hytra``, ``mbconv``: SPOS on the HyTra fabric and BossNAS's MBConv space (scaled macros, digits 16x16).

    OMP_NUM_THREADS=1 python benchmarks/supernet_learning.py [--cases nasnet,hytra] [--epochs N] [--json out.json]
    python benchmarks/supernet_learning.py --quick     # a smoke run: 2 epochs of the nasnet case on 200 images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.data import load_dataset
from nas.events import Event, EventType, Reporter
from nas.runner import dataset_macro_of, plan_search
from nas.specio import load_spec, parse_spec
from nas.strategies.base import SearchContext
from nas.strategies.spos import SPOSStrategy

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "digits-spos.yaml"


@dataclass
class Case:
    """One supernet to study: the demo spec with ``space``/``strategy`` parts replaced."""

    name: str
    space: dict[str, Any] | None = None  # replaces spec.space (None: the demo's)
    strategy_options: dict[str, Any] = field(default_factory=dict)  # merged into the demo's strategy options
    epoch_divisor: int = 1  # FairNAS trains a group of paths per step: fewer epochs for the same compute


CASES: dict[str, Case] = {
    "nasnet": Case("nasnet"),
    "nasnet-random-init": Case("nasnet-random-init", space={"supernet": {"init": "random", "head_norm": False}}),
    "nasnet-fair": Case("nasnet-fair", strategy_options={"strict_fairness": True}, epoch_divisor=6),
    "hytra": Case(
        "hytra",
        space={
            "name": "hytra",
            "options": {},
            "macro": {"stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 4},
        },
    ),
    "mbconv": Case(
        "mbconv",
        space={
            "name": "bossnas-mbconv",
            "options": {},
            "macro": {"stem_stride": 1, "width_mult": 0.25, "head_channels": 64},
        },
    ),
}


class EpochLog(Reporter):
    """Keeps the training accuracy of every epoch event."""

    def __init__(self, say: Any) -> None:
        self.accuracy: list[float] = []
        self.say = say

    def emit(self, event: Event) -> None:
        if event.type == EventType.EPOCH and event.metrics and "train_accuracy" in event.metrics:
            self.accuracy.append(float(event.metrics["train_accuracy"]))
            self.say(f"  epoch {len(self.accuracy)}: train accuracy {self.accuracy[-1]:.3f}")


class FixedPathSPOS(SPOSStrategy):
    """SPOS whose supernet is trained on one path only (the ceiling of the comparison)."""

    fixed: Architecture

    def path_hooks(self, ctx: SearchContext, supernet: Any, rng: random.Random, cfg: Any) -> tuple[Any, Any]:
        def keep(_step: int) -> None:
            supernet.set_active(self.fixed)

        return keep, None


class FirstPathAccuracy(SPOSStrategy):
    """FairNAS training whose reported accuracy is that of the first path of each group (the default loss of a
    group reports none)."""

    first_correct = 0
    first_count = 0

    def path_hooks(self, ctx: SearchContext, supernet: Any, rng: random.Random, cfg: Any) -> tuple[Any, Any]:
        before, loss_fn = super().path_hooks(ctx, supernet, rng, cfg)
        if loss_fn is None:
            return before, loss_fn
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        space = ctx.space

        def fair_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            total = x.new_zeros(())
            for i, arch in enumerate(space.fair_paths(rng)):  # type: ignore[attr-defined]
                supernet.set_active(arch)
                out = model(x)
                logits = out[0] if isinstance(out, tuple) else out
                if i == 0:
                    self.first_correct += int((logits.argmax(1) == y).sum())
                    self.first_count += int(y.numel())
                total = total + criterion(logits.float(), y)
            return total

        return None, fair_loss


def build_context(case: Case, epochs: int | None, limit: int | None, workdir: Path, reporter: Reporter) -> Any:
    """``(spec, plan, ctx)`` for ``case``: the demo spec with the case's changes."""
    raw = load_spec(DEMO).model_dump(mode="json")
    if case.space is not None:
        if "name" in case.space:
            raw["space"] = dict(case.space)
        else:
            raw["space"]["options"] = {**raw["space"]["options"], **case.space}
    options = {**raw["strategy"]["options"], **case.strategy_options}
    if epochs is not None:
        options["epochs"] = epochs
    options["epochs"] = max(1, options["epochs"] // case.epoch_divisor)
    raw["strategy"]["options"] = options
    if limit is not None:
        raw["dataset"]["limit"] = limit
    spec = parse_spec(raw)
    plan = plan_search(spec)
    data = load_dataset(spec.dataset)
    macro = plan.space.macro(spec.space.macro, **dataset_macro_of(plan.space, spec, data))
    ctx = SearchContext(
        space=plan.space, macro=macro, data=data, device=torch.device("cpu"),
        checkpoints=CheckpointStore(workdir), reporter=reporter, seed=spec.seed,
    )  # fmt: skip
    return spec, plan, ctx


def random_paths(space: Any, n: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def run_case(case: Case, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"case": case.name}
    with tempfile.TemporaryDirectory(prefix="supernet-learning-") as tmp:
        log = EpochLog(say)
        spec, plan, ctx = build_context(case, args.epochs, args.limit, Path(tmp) / "sampled", log)
        strategy_cls = FirstPathAccuracy if case.strategy_options.get("strict_fairness") else SPOSStrategy
        strategy = strategy_cls(spec.strategy.options)
        steps_per_epoch = len(strategy.supernet_loader(ctx, strategy.supernet_train_spec()))
        result.update(
            space=spec.space.name, options=spec.space.options, macro=spec.space.macro,
            epochs=strategy.options.epochs, steps=strategy.options.epochs * steps_per_epoch,
        )  # fmt: skip
        say(f"{case.name}: sampled paths, {result['steps']} steps")
        t0 = time.perf_counter()
        supernet = strategy.train_supernet(ctx)
        result["train_s"] = round(time.perf_counter() - t0, 1)
        if isinstance(strategy, FirstPathAccuracy):
            result["sampled_note"] = "FairNAS: first path of each group, whole run"
            log.accuracy = [strategy.first_correct / max(1, strategy.first_count)]
        result["sampled_accuracy"] = [round(a, 4) for a in log.accuracy]
        archs = random_paths(plan.space, args.paths, spec.seed + 7)
        scores = [float(strategy.score(ctx, supernet, a)) for a in archs]
        result["random_paths_val"] = {"median": statistics.median(scores), "min": min(scores), "max": max(scores)}
        say(f"  {args.paths} random paths, inherited-weight val accuracy: median {statistics.median(scores):.3f}")
        if args.evolution and case.name.startswith("nasnet") and not case.strategy_options:
            candidates = strategy.evolve(ctx, supernet)
            population = [float(c.metrics["accuracy"]) for c in candidates]
            result["evolution_population_val"] = {
                "n": len(population), "median": statistics.median(population), "max": max(population),
            }  # fmt: skip
            say(f"  evolution: {len(population)} rated, median {statistics.median(population):.3f}")
        if not args.no_fixed:
            fixed_log = EpochLog(say)
            _, _, fctx = build_context(case, args.epochs, args.limit, Path(tmp) / "fixed", fixed_log)
            fixed = FixedPathSPOS({**spec.strategy.options, "strict_fairness": False})
            fixed.fixed = archs[0]
            if case.epoch_divisor > 1:  # the same number of steps as the sampled run took path evaluations
                fixed.options.epochs = strategy.options.epochs * case.epoch_divisor
            say(f"{case.name}: one fixed path")
            fixed_supernet = fixed.train_supernet(fctx)
            result["fixed_accuracy"] = [round(a, 4) for a in fixed_log.accuracy]
            result["fixed_path_val"] = float(fixed.score(fctx, fixed_supernet, archs[0]))
    return result


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg": [round(v, 1) for v in os.getloadavg()],
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| case | steps | sampled-path train acc (epochs 1, 25%, 50%, 75%, end) | fixed path | "
        "random paths, inherited val (median) | evolution population (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:

        def marks(acc: list[float]) -> str:
            if not acc:
                return "-"
            idx = sorted({0, len(acc) // 4, len(acc) // 2, 3 * len(acc) // 4, len(acc) - 1})
            return " / ".join(f"{acc[i]:.2f}" for i in idx)

        evo = r.get("evolution_population_val")
        fixed = marks(r.get("fixed_accuracy", []))
        population = f"{evo['median']:.3f}" if evo else "-"
        lines.append(
            f"| {r['case']} | {r['steps']} | {marks(r['sampled_accuracy'])} | {fixed} | "
            f"{r['random_paths_val']['median']:.3f} | {population} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="nasnet,nasnet-random-init", help=f"comma separated: {', '.join(CASES)}")
    p.add_argument("--epochs", type=int, default=None, help="supernet epochs (default: the demo's 30)")
    p.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    p.add_argument("--paths", type=int, default=16, help="random paths to rate with inherited weights")
    p.add_argument("--evolution", action="store_true", help="nasnet cases: run the demo's evolution too")
    p.add_argument("--no-fixed", action="store_true", help="skip the fixed-path run")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="smoke run: nasnet, 2 epochs, 200 images, 4 paths")
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.epochs, args.limit, args.paths = "nasnet", 2, 200, 4
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {', '.join(unknown)}; allowed: {', '.join(CASES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results = [run_case(CASES[name], args, say) for name in args.cases.split(",")]
    report = {"machine": machine(), "wall_s": round(time.perf_counter() - started, 1), "results": results}
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
