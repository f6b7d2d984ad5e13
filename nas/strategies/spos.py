"""One-shot SPOS (Guo et al., ECCV 2020): train a weight-sharing supernet with uniform single-path sampling (optionally
with FairNAS strict fairness, Chu et al., ICCV 2021), then run a constrained evolutionary search that scores candidates
with inherited weights after BatchNorm recalibration."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.objectives import mark_pareto, rank
from nas.space import FairPaths, SearchSpace
from nas.spec import Candidate, SearchResult, TrainSpec
from nas.strategies.base import SearchContext, Strategy, StrategyOptions
from nas.strategies.evolution import Evolution, EvolutionOptions, python_state
from nas.strategies.ray_local import ray_available
from nas.supernet import Supernet, recalibrate_bn
from nas.train import StepHook, Trainer, evaluate, fit

if TYPE_CHECKING:
    from nas.data import DeviceLoader

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# SPOS's evolution as published (Guo et al., ECCV 2020, section 3.4): population 50, 20 iterations, top 10 parents,
# 25 mutations (probability 0.1 per choice) and 25 crossovers per generation, BatchNorm statistics recalibrated on
# 20 training batches of 128 images before each candidate is scored.
PAPER_EVOLUTION: dict[str, Any] = {
    "population": 50,
    "generations": 20,
    "parents": 10,
    "mutation_rate": 0.1,
    "mutation_share": 0.5,
}
PAPER_SCORING: dict[str, Any] = {"bn_batches": 20, "bn_batch_size": 128}


class SPOSOptions(StrategyOptions):
    preset: Literal["paper"] | None = Field(
        None,
        description="paper: the SPOS paper's evolution (population 50, 20 generations, top 10 parents, 25 mutations "
        "at probability 0.1 and 25 crossovers per generation) and BatchNorm recalibration (20 batches of 128); "
        "options given explicitly win over the preset",
    )
    epochs: int = Field(10, ge=0, le=10_000, description="supernet training epochs")
    train: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=10, lr=0.05, weight_decay=1e-4))
    data_parallel: int = Field(
        1, ge=1, le=64, description="supernet training workers (Ray Train, one GPU each on CUDA); 1: in this process"
    )
    cpus_per_worker: float = Field(1.0, gt=0.0, le=1024.0, description="data_parallel > 1: CPUs reserved per worker")
    strict_fairness: bool = Field(False, description="FairNAS: every choice trained once per step group")
    evolution: EvolutionOptions = Field(default_factory=EvolutionOptions)
    bn_batches: int = Field(4, ge=0, le=10_000, description="training batches for BatchNorm recalibration")
    bn_batch_size: int | None = Field(
        None, ge=1, le=65_536, description="images per BatchNorm recalibration batch; None: train.batch_size"
    )
    eval_batch_size: int = Field(256, ge=1, le=65_536)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the options the preset sets and the caller left out (the preset's name is validated as a field)."""
        if not isinstance(data, dict) or data.get("preset") != "paper":
            return data
        out = dict(data)
        evolution = out.get("evolution", {})
        if isinstance(evolution, EvolutionOptions):
            evolution = evolution.model_dump(exclude_unset=True)
        if isinstance(evolution, dict):
            out["evolution"] = {**PAPER_EVOLUTION, **evolution}
        for key, value in PAPER_SCORING.items():
            out.setdefault(key, value)
        return out

    @field_validator("data_parallel")
    @classmethod
    def _check_data_parallel(cls, value: int, info: ValidationInfo) -> int:
        if value == 1:
            return value
        if not ray_available():
            raise ValueError("data_parallel > 1 needs Ray (pip install 'nas-service[ray]'); allowed here: 1")
        train = info.data.get("train")
        if train is not None and train.batch_size % value:
            raise ValueError(
                f"train.batch_size {train.batch_size} must be a multiple of data_parallel {value} "
                "(every worker takes an equal share of each batch)"
            )
        return value


class SPOSStrategy(Strategy):
    name = "spos"
    Options = SPOSOptions
    options: SPOSOptions

    def worker_resources(self, runner_gpus: float) -> tuple[float, float]:
        """Data-parallel training: a GPU per worker when the runner has one, else ``cpus_per_worker`` each."""
        n = self.options.data_parallel
        if n <= 1:
            return 0.0, 0.0
        return (0.0, float(n)) if runner_gpus > 0 else (n * self.options.cpus_per_worker, 0.0)

    def check_space(self, space: SearchSpace) -> None:
        super().check_space(space)
        if self.options.strict_fairness and not isinstance(space, FairPaths):
            raise InvalidInput("strategy.options.strict_fairness", f"space {space.name!r} has no fair sampler")

    # --- supernet training ---------------------------------------------------------------------------------
    # The pieces below are shared by the in-process loop and the data-parallel workers (nas.strategies.data_parallel),
    # so both build the same supernet, draw the same paths and follow the same schedule.
    def build_supernet(self, ctx: SearchContext) -> Supernet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)  # the initial weights depend on the seed alone
            return ctx.space.supernet(ctx.macro, mode="single_path")

    def supernet_train_spec(self) -> TrainSpec:
        return self.options.train.model_copy(update={"epochs": self.options.epochs})

    def supernet_loader(self, ctx: SearchContext, cfg: TrainSpec) -> DeviceLoader:
        """The training batches (``cfg.batch_size`` is the global batch when training is data-parallel)."""
        return ctx.loader("train", cfg.batch_size, shuffle=True, augment=cfg.augment, seed_offset=1)

    def path_sampler(self, ctx: SearchContext) -> random.Random:
        return random.Random(ctx.seed * 1_000_003 + 17)

    def path_hooks(
        self, ctx: SearchContext, supernet: Supernet, rng: random.Random, cfg: TrainSpec
    ) -> tuple[StepHook | None, LossFn | None]:
        """``(before_step, loss_fn)`` for :class:`nas.train.Trainer`: one uniform path drawn before each step, or
        (strict fairness) a loss summed over a group of paths that trains every choice once."""
        if not self.options.strict_fairness:

            def sample_path(_step: int) -> None:
                supernet.set_active(ctx.space.sample(rng))

            return sample_path, None
        space = ctx.space
        if not isinstance(space, FairPaths):
            raise InvalidInput("strategy.options.strict_fairness", f"space {space.name!r} has no fair sampler")
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        def fair_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            total = x.new_zeros(())
            for arch in space.fair_paths(rng):
                supernet.set_active(arch)
                out = model(x)
                logits = out[0] if isinstance(out, tuple) else out
                total = total + criterion(logits.float(), y)
            return total

        return None, fair_loss

    def train_supernet(self, ctx: SearchContext) -> Supernet:
        opts = self.options
        supernet = self.build_supernet(ctx)
        if opts.data_parallel > 1:
            from nas.strategies.data_parallel import train_data_parallel

            train_data_parallel(self, ctx, supernet)
            return supernet
        cfg = self.supernet_train_spec()
        loader = self.supernet_loader(ctx, cfg)
        rng = self.path_sampler(ctx)
        before_step, loss_fn = self.path_hooks(ctx, supernet, rng, cfg)
        trainer = Trainer(
            supernet, cfg, ctx.device, len(loader), params=supernet.weight_parameters(),
            before_step=before_step, loss_fn=loss_fn,
        )  # fmt: skip
        fit(
            trainer,
            loader,
            epochs=opts.epochs,
            phase="supernet",
            reporter=ctx.reporter,
            checkpoints=ctx.checkpoints,
            name="supernet",
            cancel=ctx.cancel,
            extra_state=(lambda: {"sampler": rng.getstate()}, lambda s: rng.setstate(python_state(s["sampler"]))),
        )
        return supernet

    # --- candidate scoring ---------------------------------------------------------------------------------
    def score(self, ctx: SearchContext, supernet: Supernet, arch: Architecture) -> float:
        """Validation accuracy of ``arch`` with inherited weights, after BatchNorm recalibration."""
        supernet.set_active(arch)
        with torch.random.fork_rng(devices=[]):
            # dropout/drop-path during recalibration must not depend on what ran before (exact resume)
            torch.manual_seed(int(arch.hash[:8], 16) ^ ctx.seed)
            return self._score(ctx, supernet)

    def _score(self, ctx: SearchContext, supernet: Supernet) -> float:
        if self.options.bn_batches:
            size = self.options.bn_batch_size or self.options.train.batch_size
            bn_loader = ctx.loader("train", size, shuffle=True, augment=False, seed_offset=2)
            batches = (x for i, (x, _) in enumerate(bn_loader) if i < self.options.bn_batches)
            recalibrate_bn(supernet, batches)
        val = ctx.loader("val", self.options.eval_batch_size, shuffle=False, augment=False)
        return evaluate(supernet, val, ctx.device)["accuracy"]

    # --- evolution (nas.strategies.evolution) -------------------------------------------------------------
    def evolve(self, ctx: SearchContext, supernet: Supernet) -> list[Candidate]:
        supernet.to(ctx.device)
        evolution = Evolution(ctx, self.options.evolution, lambda arch: {"accuracy": self.score(ctx, supernet, arch)})
        return evolution.run(random.Random(ctx.seed * 1_000_003 + 29))

    def run(self, ctx: SearchContext) -> SearchResult:
        self.check_space(ctx.space)
        supernet = self.train_supernet(ctx)
        candidates = self.evolve(ctx, supernet)
        front = mark_pareto(candidates, ctx.objectives)
        return SearchResult(
            strategy=self.name, candidates=candidates, best=rank(candidates, ctx.objectives), pareto=front
        )
