"""Random search: the baseline every NAS method must beat (Li & Talwalkar, "Random Search and Reproducibility for
Neural Architecture Search", UAI 2019). Sample architectures uniformly, train each from scratch for a short budget,
keep the best."""

from __future__ import annotations

import logging
import random
from typing import Any, ClassVar

from pydantic import Field, field_validator

from nas.spec import SearchResult, TrainSpec
from nas.strategies.base import SearchContext, Strategy, StrategyOptions
from nas.strategies.trial import (
    build_result,
    check_trial_train,
    python_rng_state,
    short_train,
    stored_candidate,
    train_candidate,
    trial_seed,
)

log = logging.getLogger(__name__)

PHASE = "random"
CHECKPOINT = "random_search"


class RandomOptions(StrategyOptions):
    trials: int = Field(20, ge=1, le=100_000, description="architectures to train (infeasible ones are skipped)")
    train: TrainSpec = Field(
        default_factory=short_train, description="how each trial trains; train.epochs is the per-trial budget"
    )
    max_skips: int = Field(
        1000, ge=0, le=1_000_000, description="stop early after this many skipped (infeasible or repeated) samples"
    )

    @field_validator("train")
    @classmethod
    def _trial_budget(cls, value: TrainSpec) -> TrainSpec:
        return check_trial_train(value)


class RandomStrategy(Strategy):
    """Uniform samples of the space, each trained from scratch with the same short budget.

    Resume: after every trial the results so far, the sampler's RNG state and the set of architectures seen are
    checkpointed; an interrupted trial is re-run from scratch with the same seed.
    """

    name: ClassVar[str] = "random"
    Options: ClassVar[type[StrategyOptions]] = RandomOptions

    def run(self, ctx: SearchContext) -> SearchResult:
        opts: RandomOptions = self.options
        rng = random.Random(ctx.seed)
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        skipped = 0
        if (state := ctx.checkpoints.load(CHECKPOINT)) is not None:
            rng.setstate(python_rng_state(state["rng"]))
            results = list(state["results"])
            seen = set(state["seen"])
            skipped = int(state["skipped"])
            ctx.reporter.log(f"resumed random search after {len(results)} trials", phase=PHASE)
        ctx.reporter.phase_started(PHASE, total=opts.trials)
        while len(results) < opts.trials and skipped <= opts.max_skips:
            ctx.check_cancelled()
            arch = ctx.space.sample(rng)
            if arch.hash in seen or not ctx.feasible_arch(arch):
                skipped += 1
                seen.add(arch.hash)
                continue
            seen.add(arch.hash)
            index = len(results)
            metrics = train_candidate(ctx, arch, opts.train, opts.train.epochs, seed=trial_seed(ctx.seed, index))
            cand = ctx.candidate(arch, metrics)
            results.append({"arch": arch.model_dump(mode="json"), "metrics": dict(cand.metrics)})
            ctx.checkpoints.save(
                CHECKPOINT,
                {"rng": rng.getstate(), "results": results, "seen": sorted(seen), "skipped": skipped},
            )
            ctx.reporter.candidate(PHASE, results[-1]["arch"], cand.metrics, index)
            ctx.reporter.progress(PHASE, len(results), opts.trials, {"accuracy": metrics["accuracy"]})
        if len(results) < opts.trials:
            ctx.reporter.log(
                f"stopped after {skipped} skipped samples with {len(results)}/{opts.trials} trials "
                "(constraints too tight or space too small)",
                phase=PHASE,
            )
        candidates = [stored_candidate(ctx, r["arch"], r["metrics"]) for r in results]
        best_acc = max((c.metrics["accuracy"] for c in candidates), default=0.0)
        ctx.reporter.phase_finished(PHASE, {"trials": float(len(results)), "best_accuracy": best_acc})
        return build_result(ctx, self.name, candidates, {"skipped": skipped})
