"""Train and evaluate one candidate for a short budget: the evaluation shared by the multi-trial strategies
(random search, Optuna), plus the small helpers they share to turn stored results into a SearchResult."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from nas.arch import Architecture
from nas.objectives import mark_pareto, rank
from nas.spec import Candidate, SearchResult, TrainSpec
from nas.train import Trainer, evaluate

if TYPE_CHECKING:
    from nas.strategies.base import SearchContext

log = logging.getLogger(__name__)

#: ``report(epoch, val_accuracy) -> prune?``: called after every epoch; True stops the trial early.
ReportFn = Callable[[int, float], bool]


def short_train() -> TrainSpec:
    """The default per-trial training of the multi-trial strategies."""
    return TrainSpec(epochs=3)


def trial_seed(base: int, index: int) -> int:
    """The seed of trial ``index`` of a search seeded with ``base`` (independent of the order trials run in)."""
    return (base * 1_000_003 + 7919 * (index + 1)) % (2**31 - 1)


def train_candidate(
    ctx: SearchContext,
    arch: Architecture,
    train: TrainSpec,
    epochs: int,
    *,
    seed: int,
    report: ReportFn | None = None,
    phase: str | None = None,
) -> dict[str, float]:
    """Build ``arch`` from scratch, train it ``epochs`` epochs on the training split, evaluate on the validation split
    after every epoch.

    The weights are initialised from ``torch.manual_seed(seed)`` and the training batches are shuffled from ``seed``,
    so the same call gives the same numbers. The learning-rate schedule spans the ``epochs`` of this trial.
    ``report(epoch, val_accuracy)`` is called after each epoch; when it returns True before the last epoch the trial
    stops there (pruned).
    Raises SearchCancelled when ``ctx.cancel`` is set.

    Returns ``accuracy`` (validation accuracy after the last epoch trained), ``best_accuracy``, ``val_loss``,
    ``train_loss``, ``epochs`` (epochs trained) and ``pruned`` (1.0 when stopped by ``report``).
    """
    cfg = train.model_copy(update={"epochs": epochs})
    torch.manual_seed(seed)
    model = ctx.space.build(arch, ctx.macro)
    train_loader = ctx.loader("train", cfg.batch_size, shuffle=True, augment=cfg.augment, seed_offset=seed - ctx.seed)
    val_loader = ctx.loader("val", cfg.batch_size, shuffle=False, augment=False)
    trainer = Trainer(model, cfg, ctx.device, steps_per_epoch=max(1, len(train_loader)))
    out: dict[str, float] = {
        "accuracy": 0.0,
        "best_accuracy": 0.0,
        "val_loss": float("nan"),
        "train_loss": float("nan"),
        "epochs": 0.0,
        "pruned": 0.0,
    }
    for epoch in range(1, epochs + 1):
        ctx.check_cancelled()
        train_metrics = trainer.train_epoch(train_loader, ctx.cancel)
        val = evaluate(trainer.model, val_loader, ctx.device, trainer.amp)
        out.update(
            accuracy=val["accuracy"],
            best_accuracy=max(out["best_accuracy"], val["accuracy"]),
            val_loss=val["loss"],
            train_loss=train_metrics["train_loss"],
            epochs=float(epoch),
        )
        if phase is not None:
            ctx.reporter.epoch(phase, epoch, epochs, {k: out[k] for k in ("accuracy", "val_loss", "train_loss")})
        if report is not None and report(epoch, val["accuracy"]) and epoch < epochs:
            out["pruned"] = 1.0
            log.debug("trial pruned after epoch %d (val accuracy %.4f)", epoch, val["accuracy"])
            break
    return out


def check_trial_train(value: TrainSpec) -> TrainSpec:
    """Validator of a strategy's ``train`` option where ``train.epochs`` is the budget of one trial."""
    if value.epochs < 1:
        raise ValueError("epochs (the budget of one trial) must be at least 1")
    return value


def python_rng_state(value: Any) -> Any:
    """``random.Random.setstate`` wants tuples; a checkpoint round trip may give lists."""
    if isinstance(value, list | tuple):
        return tuple(python_rng_state(v) for v in value)
    return value


def stored_candidate(ctx: SearchContext, arch: dict[str, Any], metrics: dict[str, float]) -> Candidate:
    """A Candidate rebuilt from what a checkpoint stores (arch as a dict, metrics with the costs already in)."""
    full = {k: float(v) for k, v in metrics.items()}
    return Candidate(arch=Architecture.from_dict(arch), metrics=full, feasible=ctx.feasible(full))


def build_result(
    ctx: SearchContext, strategy: str, candidates: Sequence[Candidate], extra: dict[str, Any] | None = None
) -> SearchResult:
    """Every candidate, best first, with the Pareto front marked."""
    pool = list(candidates)
    front = mark_pareto(pool, ctx.objectives)
    return SearchResult(
        strategy=strategy, candidates=pool, best=rank(pool, ctx.objectives), pareto=front, extra=extra or {}
    )
