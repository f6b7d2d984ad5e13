"""Runs a whole search locally: validate, load data, run the strategy, retrain the winners, test, export.

Every phase checkpoints, so ``run_search(..., resume=True)`` after an interruption continues where it stopped and
ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.arch import canonical_json
from nas.checkpoint import CheckpointStore
from nas.data.registry import dataset_info
from nas.errors import InvalidInput
from nas.events import Event, EventType, MultiReporter, Reporter
from nas.space import MacroBase, SearchSpace, get_space
from nas.spec import Candidate, FinalModel, RunResult, SearchResult, SearchSpec
from nas.strategies.base import SearchContext, Strategy, get_strategy
from nas.tasks import DEFAULT_TASKS, check_tasks
from nas.train import Trainer, evaluate, fit, seed_everything

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated spec with its resolved parts."""

    spec: SearchSpec
    space: SearchSpace
    strategy: Strategy


def plan_search(spec: SearchSpec) -> Plan:
    """Resolve and validate every part of ``spec`` that can be checked without data: the space, the strategy, that
    both and the dataset serve the task (classification: specs name no task yet), the macro. Raises InvalidInput."""
    space = get_space(spec.space.name, **spec.space.options)
    strategy = get_strategy(spec.strategy.name, spec.strategy.options)
    strategy.check_space(space)
    check_tasks(DEFAULT_TASKS, space=space, strategy=strategy, dataset=dataset_info(spec.dataset.name))
    space.macro(spec.space.macro)  # field errors name macro.<field>
    try:
        space.macro({**spec.space.macro, **spec.final.macro})
    except InvalidInput as exc:
        raise InvalidInput(exc.field.replace("macro", "final.macro", 1), exc.message) from exc
    return Plan(spec=spec, space=space, strategy=strategy)


def spec_hash(spec: SearchSpec) -> str:
    return hashlib.sha256(canonical_json(spec.model_dump(mode="json")).encode()).hexdigest()[:8]


def default_output(spec: SearchSpec, root: str | Path = "runs") -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in spec.name)[:60] or "search"
    return Path(root) / f"{safe}-{spec_hash(spec)}"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", "CUDA was asked for but no GPU is available; allowed here: auto, cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class JsonlReporter(Reporter):
    """Appends every event except per-batch progress to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, event: Event) -> None:
        if event.type == EventType.PROGRESS and event.phase != "evolution":
            return
        with self.path.open("a") as fh:
            fh.write(event.model_dump_json(exclude_defaults=True) + "\n")


def _prepare_output(spec: SearchSpec, out: Path, resume: bool) -> None:
    spec_file = out / "spec.json"
    if resume:
        if not spec_file.is_file():
            raise InvalidInput("output", f"{str(out)!r} holds no interrupted search to resume (no spec.json)")
        stored = json.loads(spec_file.read_text())
        if canonical_json(stored) != canonical_json(spec.model_dump(mode="json")):
            raise InvalidInput("spec", f"differs from the spec of the search in {str(out)!r}; resume needs the same")
        return
    if out.exists() and any(out.iterdir()):
        raise InvalidInput("output", f"{str(out)!r} already holds files; pass --resume or choose another output")
    out.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec.model_dump(mode="json"), indent=2))


def run_search(
    spec: SearchSpec,
    out: str | Path,
    *,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
    dataset_roots: list[Path] | None = None,
) -> RunResult:
    """Run ``spec`` end to end in this process, writing everything under ``out``."""
    from nas.data import load_dataset

    started = time.perf_counter()
    out = Path(out)
    plan = plan_search(spec)
    device = resolve_device(spec.device)
    data = load_dataset(spec.dataset, roots=dataset_roots)  # validates paths before anything is written
    _prepare_output(spec, out, resume)
    reporter = MultiReporter(JsonlReporter(out / "events.jsonl"), *([reporter] if reporter else []))
    cancel = cancel or threading.Event()
    dataset_macro = dataset_macro_of(plan.space, spec, data)
    macro = plan.space.macro(spec.space.macro, **dataset_macro)
    checkpoints = CheckpointStore(out / "checkpoints")
    ctx = SearchContext(
        space=plan.space,
        macro=macro,
        data=data,
        device=device,
        checkpoints=checkpoints.child("search"),
        reporter=reporter,
        objectives=list(spec.objectives),
        constraints=list(spec.constraints),
        cancel=cancel,
        seed=spec.seed,
        latency_input_size=spec.latency_input_size,
    )
    try:
        search = _search_phase(plan, ctx, out / "search_result.json")
        finals = _final_phase(plan, ctx, search, checkpoints, out / "final", dataset_macro)
    except BaseException as exc:
        kind = EventType.CANCELLED if cancel.is_set() or isinstance(exc, KeyboardInterrupt) else EventType.FAILED
        reporter.emit(Event(type=kind, message=f"{type(exc).__name__}: {exc}"))
        raise
    result = RunResult(
        spec=spec, search=search, final=finals, elapsed_s=time.perf_counter() - started, directory=str(out)
    )
    _atomic_write(out / "result.json", result.model_dump_json(indent=2))
    reporter.emit(
        Event(type=EventType.FINISHED, metrics=finals[0].metrics if finals else {}, data={"directory": str(out)})
    )
    return result


def dataset_macro_of(space: SearchSpace, spec: SearchSpec, data: Any) -> dict[str, Any]:
    """What the data dictates of the macro: classes, channels, and the input size for spaces that size by it."""
    out: dict[str, Any] = {"num_classes": data.num_classes, "in_channels": data.channels}
    if "image_size" in space.Macro.model_fields and "image_size" not in spec.space.macro:
        out["image_size"] = data.image_size
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _search_phase(plan: Plan, ctx: SearchContext, result_file: Path) -> SearchResult:
    if result_file.is_file():
        ctx.reporter.log("search phase already complete; reusing its result", phase="search")
        return SearchResult.model_validate_json(result_file.read_text())
    seed_everything(ctx.seed)
    search = plan.strategy.run(ctx)
    _atomic_write(result_file, search.model_dump_json(indent=2))
    return search


def _winners(plan: Plan, search: SearchResult) -> list[Candidate]:
    feasible = [c for c in search.best if c.feasible]
    if not feasible:
        raise InvalidInput("constraints", "no evaluated architecture satisfies the constraints; relax the bounds")
    return feasible[: plan.spec.final.top_k]


def _final_phase(
    plan: Plan,
    ctx: SearchContext,
    search: SearchResult,
    checkpoints: CheckpointStore,
    final_root: Path,
    dataset_macro: dict[str, Any],
) -> list[FinalModel]:
    spec = plan.spec
    if not spec.final.enabled:
        return []
    from nas.export import export_model

    macro: MacroBase = plan.space.macro({**spec.space.macro, **spec.final.macro}, **dataset_macro)
    cfg = spec.final.train
    finals: list[FinalModel] = []
    winners = _winners(plan, search)
    for rank_index, cand in enumerate(winners, start=1):
        target = final_root / f"{rank_index}-{cand.arch.hash}"
        if (target / "arch.json").is_file():
            saved = json.loads((target / "arch.json").read_text())
            finals.append(
                FinalModel(
                    arch=cand.arch,
                    macro=saved["macro"],
                    metrics=saved["metrics"],
                    directory=str(target),
                    artifacts=saved["files"],
                )
            )
            continue
        phase = f"retrain-{rank_index}"
        torch.manual_seed(spec.seed * 7919 + rank_index)
        model = plan.space.build(cand.arch, macro)
        train_loader = ctx.loader(
            "train", cfg.batch_size, shuffle=True, augment=cfg.augment, seed_offset=100 + rank_index
        )
        val_loader = ctx.loader("val", 256, shuffle=False, augment=False)
        trainer = Trainer(model, cfg, ctx.device, len(train_loader))
        fit(
            trainer,
            train_loader,
            epochs=cfg.epochs,
            phase=phase,
            reporter=ctx.reporter,
            checkpoints=checkpoints,
            name=f"final-{rank_index}",
            val_loader=val_loader,
            cancel=ctx.cancel,
        )
        test = evaluate(trainer.model, ctx.loader("test", 256, shuffle=False, augment=False), ctx.device)
        val = evaluate(trainer.model, val_loader, ctx.device)
        costs = ctx.costs(cand.arch) if macro == ctx.macro else _costs(plan.space, cand, macro, ctx)
        metrics = {**costs, "test_accuracy": test["accuracy"], "val_accuracy": val["accuracy"]}
        if "accuracy" in cand.metrics:  # not every strategy rates by accuracy (BossNAS: bossnas_score)
            metrics["search_accuracy"] = cand.metrics["accuracy"]
        ctx.reporter.phase_started("export", total=1)
        tmp = final_root / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        files = export_model(
            trainer.model.cpu().eval(),
            cand.arch,
            macro.model_dump(mode="json"),
            plan.space,
            tmp,
            input_shape=(1, ctx.data.channels, ctx.data.image_size, ctx.data.image_size),
            formats=spec.final.export,
            metrics=metrics,
            space_options=plan.space.options.model_dump(mode="json"),
            preprocessing={"mean": list(ctx.data.mean), "std": list(ctx.data.std), "image_size": ctx.data.image_size},
        )
        os.replace(tmp, target)
        ctx.reporter.phase_finished("export", {"test_accuracy": test["accuracy"]})
        finals.append(
            FinalModel(
                arch=cand.arch,
                macro=macro.model_dump(mode="json"),
                metrics=metrics,
                directory=str(target),
                artifacts=files,
            )
        )
    return finals


def _costs(space: SearchSpace, cand: Candidate, macro: MacroBase, ctx: SearchContext) -> dict[str, float]:
    from nas.measure import measure_build_costs

    size = ctx.latency_input_size or ctx.data.image_size
    inference = macro.for_inference()
    return measure_build_costs(
        lambda: space.build(cand.arch, inference),
        (1, ctx.data.channels, size, size),
        device=ctx.device,
        latency="latency" in ctx.cost_metrics,
    )
