"""Multi-trial search driven by Optuna: TPE (Bergstra et al., NeurIPS 2011) for one objective, NSGA-II (Deb et al.,
2002) for several, each trial a candidate trained from scratch for a short budget, with median or successive-halving
pruning of single-objective studies. Trials run in the process or, in parallel, as Ray tasks.

Architectures are proposed define-by-run through ``space.suggest(trial)`` when the space implements
:class:`nas.space.Suggest`. A space without it is sampled with ``space.sample`` from a per-trial seed; the sampler
then cannot model the choices and the search degenerates to random search (the architecture is kept as a trial user
attribute).

Determinism and resume. The study lives in an SQLite file in the checkpoint folder, so an interrupted run continues
the same study. Trials run in synchronous batches of ``parallel``: all trials of a batch are proposed first (the
sampler sees the finished trials of earlier batches), then trained, then told to the study in order. Every trial
has a *slot* (its position in the search); the sampler proposing slot k and the training of slot k are seeded from
(seed, k). On resume, trials left running are marked failed and re-queued with the same parameters and slot, so a
resumed search ends with the same trials as an uninterrupted one, whether trials ran in the process or on Ray.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import optuna
import torch
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import Field, field_validator

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Reporter
from nas.objectives import metric_key, violation
from nas.space import Suggest
from nas.spec import Candidate, SearchResult, TrainSpec
from nas.strategies.base import SearchContext, Strategy, StrategyOptions
from nas.strategies.ray_local import LocalRay, ray_available
from nas.strategies.trial import (
    ReportFn,
    build_result,
    check_trial_train,
    short_train,
    stored_candidate,
    train_candidate,
    trial_seed,
)

if TYPE_CHECKING:
    from nas.space import MacroBase, SearchSpace

log = logging.getLogger(__name__)

PHASE = "optuna"
STUDY_NAME = "nas"
STUDY_FILE = "optuna.db"
SAMPLER_SALT = 104_729  # keeps the sampler's seeds apart from the training seeds


class OptunaOptions(StrategyOptions):
    trials: int = Field(20, ge=1, le=100_000, description="trials to run (infeasible ones count, untrained)")
    train: TrainSpec = Field(
        default_factory=short_train, description="how each trial trains; train.epochs is the per-trial budget"
    )
    sampler: Literal["auto", "tpe", "nsga2", "random"] = Field(
        "auto", description="auto: TPE for one objective, NSGA-II for several"
    )
    startup_trials: int = Field(5, ge=0, le=100_000, description="TPE: random trials before the model is used")
    population_size: int = Field(10, ge=2, le=10_000, description="NSGA-II: population of one generation")
    pruner: Literal["median", "halving", "none"] = Field(
        "median", description="early stopping of poor trials (single-objective studies only)"
    )
    pruner_warmup_epochs: int = Field(1, ge=0, le=10_000, description="epochs a trial trains before it may be pruned")
    pruner_startup_trials: int = Field(3, ge=0, le=100_000, description="median: finished trials before pruning")
    parallel: int = Field(1, ge=1, le=1024, description="trials trained at the same time (one batch)")
    backend: Literal["auto", "local", "ray"] = Field(
        "auto", description="auto: Ray when parallel > 1 and Ray is installed, else in this process"
    )
    cpus_per_trial: float = Field(1.0, gt=0.0, le=1024.0, description="Ray: CPUs reserved by one trial")
    gpus_per_trial: float | None = Field(
        None, ge=0.0, le=64.0, description="Ray: GPUs per trial (default: 1/parallel on CUDA, else 0)"
    )

    @field_validator("train")
    @classmethod
    def _trial_budget(cls, value: TrainSpec) -> TrainSpec:
        return check_trial_train(value)


def direction(objective: str) -> StudyDirection:
    return StudyDirection.MAXIMIZE if objective == "accuracy" else StudyDirection.MINIMIZE


@dataclass
class _Proposal:
    trial: Trial
    slot: int
    arch: Architecture


class OptunaStrategy(Strategy):
    """Optuna study over the space: TPE / NSGA-II / random sampler, pruning, SQLite storage, Ray-parallel trials."""

    name: ClassVar[str] = "optuna"
    Options: ClassVar[type[StrategyOptions]] = OptunaOptions

    # --- Optuna pieces -------------------------------------------------------------------------------------
    def sampler_name(self, ctx: SearchContext) -> str:
        opts: OptunaOptions = self.options
        if opts.sampler != "auto":
            return opts.sampler
        return "tpe" if len(ctx.objectives) == 1 else "nsga2"

    def make_sampler(self, kind: str, seed: int) -> optuna.samplers.BaseSampler:
        opts: OptunaOptions = self.options
        if kind == "tpe":
            return optuna.samplers.TPESampler(n_startup_trials=opts.startup_trials, seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=opts.population_size, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def uses_pruning(self, ctx: SearchContext) -> bool:
        return len(ctx.objectives) == 1 and self.options.pruner != "none"

    def make_pruner(self, ctx: SearchContext) -> optuna.pruners.BasePruner:
        return make_pruner(self.options, prune=self.uses_pruning(ctx))

    def backend(self) -> str:
        opts: OptunaOptions = self.options
        if opts.backend != "auto":
            return opts.backend
        return "ray" if opts.parallel > 1 and ray_available() else "local"

    def check_backend(self) -> None:
        if self.options.backend == "ray" and not ray_available():
            raise InvalidInput("strategy.options.backend", "'ray' needs Ray installed (pip install 'ray[tune]')")

    # --- the search ----------------------------------------------------------------------------------------
    def run(self, ctx: SearchContext) -> SearchResult:
        # progress goes through the reporter; Optuna's own INFO lines per trial would only duplicate it
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return self._run(ctx)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run(self, ctx: SearchContext) -> SearchResult:
        opts: OptunaOptions = self.options
        self.check_backend()
        study = open_study(ctx, self.make_pruner(ctx), [direction(o) for o in ctx.objectives])
        requeued = recover(study)
        if requeued or _finished(study):
            ctx.reporter.log(
                f"resumed study with {len(_finished(study))} finished trials, {requeued} re-queued", phase=PHASE
            )
        backend = self.backend()
        runner: _Runner = _RayRunner(self, ctx, study) if backend == "ray" else _LocalRunner(self, ctx, study)
        ctx.reporter.phase_started(PHASE, total=opts.trials, message=f"{self.sampler_name(ctx)} on {backend}")
        try:
            while (done := len(_finished(study))) < opts.trials:
                ctx.check_cancelled()
                batch = self.propose(ctx, study, min(opts.parallel, opts.trials - done))
                results = runner.run_batch(batch) if batch else []
                for proposal, metrics in zip(batch, results, strict=True):
                    self.tell(ctx, study, proposal, metrics)
                ctx.reporter.progress(PHASE, len(_finished(study)), opts.trials, _best_so_far(study))
        finally:
            runner.close()
        candidates = self.candidates(ctx, study)
        best = max((c.metrics["accuracy"] for c in candidates), default=0.0)
        ctx.reporter.phase_finished(PHASE, {"trials": float(len(candidates)), "best_accuracy": best})
        finished = _finished(study)
        extra = {
            "sampler": self.sampler_name(ctx),
            "backend": backend,
            "storage": storage_url(ctx.checkpoints),
            "pruned": sum(1 for t in finished if t.state == TrialState.PRUNED and "metrics" in t.user_attrs),
            "infeasible": sum(1 for t in finished if t.user_attrs.get("infeasible")),
        }
        return build_result(ctx, self.name, candidates, extra)

    def propose(self, ctx: SearchContext, study: optuna.Study, size: int) -> list[_Proposal]:
        """Ask for up to ``size`` trials to train. Infeasible proposals are told at once (never trained) and take
        their slot and a place in the budget, so the batch may come back shorter."""
        kind = self.sampler_name(ctx)
        batch: list[_Proposal] = []
        for _ in range(size):
            slot = _next_slot(study)
            study.sampler = self.make_sampler(kind, trial_seed(ctx.seed + SAMPLER_SALT, slot))
            trial = study.ask()
            slot = int(trial.user_attrs.get("slot", slot))  # re-queued trials keep theirs
            trial.set_user_attr("slot", slot)
            arch = suggest(ctx, trial, slot)
            trial.set_user_attr("arch", arch.model_dump(mode="json"))
            if ctx.constraints:
                excess = violation(ctx.costs(arch), ctx.constraints)
                # relative excess over the cost bounds (<= 0: feasible); NSGA-II ranks infeasible trials last
                trial.set_constraint("costs", excess)
                trial.set_user_attr("constraint", excess)
                if excess > 0:
                    self.tell_infeasible(ctx, study, trial, arch)
                    continue
            trial.set_user_attr("ready", True)
            batch.append(_Proposal(trial, slot, arch))
        return batch

    def tell_infeasible(self, ctx: SearchContext, study: optuna.Study, trial: Trial, arch: Architecture) -> None:
        trial.set_user_attr("infeasible", True)
        if len(ctx.objectives) == 1:
            study.tell(trial, state=TrialState.PRUNED)
            return
        # NSGA-II ranks infeasible trials behind feasible ones through the constraint; it still needs values
        costs = ctx.costs(arch)
        values = [0.0 if o == "accuracy" else costs.get(metric_key(o), math.inf) for o in ctx.objectives]
        study.tell(trial, values)

    def tell(self, ctx: SearchContext, study: optuna.Study, proposal: _Proposal, metrics: dict[str, float]) -> None:
        cand = ctx.candidate(proposal.arch, metrics)
        proposal.trial.set_user_attr("metrics", dict(cand.metrics))
        if metrics.get("pruned"):
            study.tell(proposal.trial, state=TrialState.PRUNED)
        else:
            study.tell(proposal.trial, [cand.metrics[metric_key(o)] for o in ctx.objectives])
        ctx.reporter.candidate(PHASE, proposal.arch.model_dump(mode="json"), cand.metrics, proposal.slot)

    def candidates(self, ctx: SearchContext, study: optuna.Study) -> list[Candidate]:
        trained = [t for t in _finished(study) if "metrics" in t.user_attrs]
        trained.sort(key=lambda t: int(t.user_attrs["slot"]))
        return [stored_candidate(ctx, t.user_attrs["arch"], t.user_attrs["metrics"]) for t in trained]


# --- study storage and recovery ------------------------------------------------------------------------------
def storage_url(checkpoints: CheckpointStore) -> str:
    return f"sqlite:///{(checkpoints.root / STUDY_FILE).resolve()}"


def open_study(ctx: SearchContext, pruner: optuna.pruners.BasePruner, directions: list[StudyDirection]) -> optuna.Study:
    ctx.checkpoints.root.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(storage_url(ctx.checkpoints), engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, directions=directions, pruner=pruner, load_if_exists=True
    )
    if list(study.directions) != directions:
        raise InvalidInput("objectives", f"the study in {ctx.checkpoints.root} was started with other objectives")
    return study


def recover(study: optuna.Study) -> int:
    """Mark trials left running by an interrupted run as failed; re-queue those whose architecture was fully proposed
    with the same parameters and slot. Returns how many were re-queued."""
    requeued = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.user_attrs.get("ready"):
            attrs: dict[str, Any] = {k: t.user_attrs[k] for k in ("slot", "arch") if k in t.user_attrs}
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            requeued += 1
    return requeued


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _next_slot(study: optuna.Study) -> int:
    """The smallest slot no finished, running or queued trial holds."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    taken = {
        int(t.user_attrs["slot"]) for t in study.get_trials(deepcopy=False, states=states) if "slot" in t.user_attrs
    }
    slot = 0
    while slot in taken:
        slot += 1
    return slot


def _best_so_far(study: optuna.Study) -> dict[str, float]:
    accs = [t.user_attrs["metrics"]["accuracy"] for t in _finished(study) if "metrics" in t.user_attrs]
    return {"best_accuracy": max(accs)} if accs else {}


def suggest(ctx: SearchContext, trial: Trial, slot: int) -> Architecture:
    """The trial's architecture: define-by-run through ``space.suggest`` (:class:`nas.space.Suggest`) or, without it,
    a seeded uniform sample."""
    space = ctx.space
    if isinstance(space, Suggest):
        arch = space.suggest(trial)
        if not isinstance(arch, Architecture):
            raise TypeError(f"{type(ctx.space).__name__}.suggest must return an Architecture")
        return arch
    stored = trial.user_attrs.get("arch")
    if stored is not None:  # a re-queued trial keeps its sample
        return Architecture.from_dict(stored)
    return ctx.space.sample(random.Random(trial_seed(ctx.seed, slot)))


def make_pruner(opts: OptunaOptions, *, prune: bool) -> optuna.pruners.BasePruner:
    if not prune:
        return optuna.pruners.NopPruner()
    if opts.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, opts.pruner_warmup_epochs))
    return optuna.pruners.MedianPruner(
        n_startup_trials=opts.pruner_startup_trials, n_warmup_steps=opts.pruner_warmup_epochs
    )


def _report_to(trial: Trial) -> ReportFn:
    def report(epoch: int, accuracy: float) -> bool:
        trial.report(accuracy, epoch)
        return bool(trial.should_prune())

    return report


# --- where trials run ----------------------------------------------------------------------------------------
class _Runner:
    def run_batch(self, batch: list[_Proposal]) -> list[dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class _LocalRunner(_Runner):
    """Trains the batch's trials one after another in this process."""

    def __init__(self, strategy: OptunaStrategy, ctx: SearchContext, study: optuna.Study) -> None:
        self.opts: OptunaOptions = strategy.options
        self.ctx = ctx
        self.prune = strategy.uses_pruning(ctx)

    def run_batch(self, batch: list[_Proposal]) -> list[dict[str, float]]:
        out = []
        for p in batch:
            self.ctx.check_cancelled()
            report = _report_to(p.trial) if self.prune else None
            seed = trial_seed(self.ctx.seed, p.slot)
            out.append(
                train_candidate(self.ctx, p.arch, self.opts.train, self.opts.train.epochs, seed=seed, report=report)
            )
        return out


@dataclass
class _WorkerSetup:
    """What a Ray worker needs to rebuild the context of a trial (the data travels separately, once)."""

    space_cls: type[SearchSpace]
    space_options: dict[str, Any]
    macro: MacroBase
    device: str
    seed: int
    train: TrainSpec
    storage: str
    prune: OptunaOptions | None  # the options to build the pruner from, None without pruning


def _remote_trial(setup: _WorkerSetup, data: Any, arch: dict[str, Any], trial_id: int, slot: int) -> dict[str, float]:
    """Body of one Ray task: train one trial, reporting to the shared study for pruning decisions."""
    space = setup.space_cls(**setup.space_options)
    device = torch.device(setup.device)
    ctx = SearchContext(
        space=space,
        macro=setup.macro,
        data=data,
        device=device,
        checkpoints=CheckpointStore(tempfile.gettempdir()),
        reporter=Reporter(),
        seed=setup.seed,
    )
    report: Callable[[int, float], bool] | None = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if setup.prune is not None:
        study = optuna.load_study(
            study_name=STUDY_NAME, storage=setup.storage, pruner=make_pruner(setup.prune, prune=True)
        )
        report = _report_to(Trial(study, trial_id))
    seed = trial_seed(setup.seed, slot)
    return train_candidate(ctx, Architecture.from_dict(arch), setup.train, setup.train.epochs, seed=seed, report=report)


class _RayRunner(_Runner):
    """Trains the batch's trials as parallel Ray tasks (a local Ray instance is started when none is running)."""

    def __init__(self, strategy: OptunaStrategy, ctx: SearchContext, study: optuna.Study) -> None:
        opts: OptunaOptions = strategy.options
        self.ctx = ctx
        cuda = ctx.device.type == "cuda"
        self.session = LocalRay(
            min_cpus=opts.parallel * opts.cpus_per_trial, gpus=torch.cuda.device_count() if cuda else 0
        )
        self.ray = self.session.ray
        gpus = opts.gpus_per_trial if opts.gpus_per_trial is not None else (1.0 / opts.parallel if cuda else 0.0)
        self.task = self.ray.remote(_remote_trial).options(num_cpus=opts.cpus_per_trial, num_gpus=gpus, max_retries=0)
        space = ctx.space
        self.setup = _WorkerSetup(
            space_cls=type(space),
            space_options=space.options.model_dump(),
            macro=ctx.macro,
            device="cuda" if cuda else "cpu",
            seed=ctx.seed,
            train=opts.train,
            storage=storage_url(ctx.checkpoints),
            prune=opts if strategy.uses_pruning(ctx) else None,
        )
        self.data_ref = self.ray.put(ctx.data)

    def run_batch(self, batch: list[_Proposal]) -> list[dict[str, float]]:
        refs = [
            self.task.remote(self.setup, self.data_ref, p.arch.model_dump(mode="json"), p.trial._trial_id, p.slot)
            for p in batch
        ]
        pending = list(refs)
        try:
            while pending:
                _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=0.5)
                if self.ctx.cancel.is_set():
                    raise SearchCancelled("search cancelled")
        except BaseException:
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise
        return list(self.ray.get(refs))

    def close(self) -> None:
        self.session.close()
