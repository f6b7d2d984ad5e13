"""One-shot SPOS (Guo et al., ECCV 2020): train a weight-sharing supernet with uniform single-path sampling (optionally
with FairNAS strict fairness, Chu et al., ICCV 2021), then run a constrained evolutionary search that scores candidates
with inherited weights after BatchNorm recalibration."""

from __future__ import annotations

import random
from typing import Any

import torch
from pydantic import Field

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.objectives import mark_pareto, rank
from nas.spec import Candidate, SearchResult, TrainSpec
from nas.strategies.base import SearchContext, Strategy, StrategyOptions
from nas.supernet import Supernet, recalibrate_bn
from nas.train import Trainer, evaluate, fit


class EvolutionOptions(StrategyOptions):
    population: int = Field(20, ge=2, le=10_000)
    generations: int = Field(10, ge=0, le=10_000)
    parents: int = Field(8, ge=1, le=10_000, description="top candidates that breed the next generation")
    mutation_rate: float = Field(0.1, gt=0.0, le=1.0)
    mutation_share: float = Field(0.5, ge=0.0, le=1.0, description="share of children made by mutation")
    max_tries: int = Field(200, ge=1, le=100_000, description="attempts to draw a feasible architecture")


class SPOSOptions(StrategyOptions):
    epochs: int = Field(10, ge=0, le=10_000, description="supernet training epochs")
    train: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=10, lr=0.05, weight_decay=1e-4))
    strict_fairness: bool = Field(False, description="FairNAS: every choice trained once per step group")
    evolution: EvolutionOptions = Field(default_factory=EvolutionOptions)
    bn_batches: int = Field(4, ge=0, le=10_000, description="training batches for BatchNorm recalibration")
    eval_batch_size: int = Field(256, ge=1, le=65_536)


def _arch_dict(arch: Architecture) -> dict[str, Any]:
    return arch.model_dump(mode="json")


class SPOSStrategy(Strategy):
    name = "spos"
    Options = SPOSOptions
    options: SPOSOptions

    def check_space(self, space: Any) -> None:
        super().check_space(space)
        if self.options.strict_fairness and not hasattr(space, "fair_paths"):
            raise InvalidInput("strategy.options.strict_fairness", f"space {space.name!r} has no fair sampler")

    # --- supernet training ---------------------------------------------------------------------------------
    def train_supernet(self, ctx: SearchContext) -> Supernet:
        opts = self.options
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)  # the initial weights depend on the seed alone
            supernet = ctx.space.supernet(ctx.macro, mode="single_path")
        cfg = opts.train.model_copy(update={"epochs": opts.epochs})
        loader = ctx.loader("train", cfg.batch_size, shuffle=True, augment=cfg.augment, seed_offset=1)
        rng = random.Random(ctx.seed * 1_000_003 + 17)

        loss_fn = None
        before_step = None
        if opts.strict_fairness:
            criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

            def fair_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                total = x.new_zeros(())
                for arch in ctx.space.fair_paths(rng):  # type: ignore[attr-defined]
                    supernet.set_active(arch)
                    out = model(x)
                    logits = out[0] if isinstance(out, tuple) else out
                    total = total + criterion(logits.float(), y)
                return total

            loss_fn = fair_loss
        else:

            def sample_path(_step: int) -> None:
                supernet.set_active(ctx.space.sample(rng))

            before_step = sample_path

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
            extra_state=(lambda: {"sampler": rng.getstate()}, lambda s: rng.setstate(_tuple(s["sampler"]))),
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
            bn_loader = ctx.loader("train", self.options.train.batch_size, shuffle=True, augment=False, seed_offset=2)
            batches = (x for i, (x, _) in enumerate(bn_loader) if i < self.options.bn_batches)
            recalibrate_bn(supernet, batches)
        val = ctx.loader("val", self.options.eval_batch_size, shuffle=False, augment=False)
        return evaluate(supernet, val, ctx.device)["accuracy"]

    # --- evolution -----------------------------------------------------------------------------------------
    def _fresh(self, ctx: SearchContext, rng: random.Random, seen: set[str]) -> Architecture | None:
        """A feasible architecture not seen before, or None when ``max_tries`` draws found none."""
        for _ in range(self.options.evolution.max_tries):
            arch = ctx.space.sample(rng)
            if arch.hash not in seen and ctx.feasible_arch(arch):
                seen.add(arch.hash)
                return arch
        return None

    def _children(
        self, ctx: SearchContext, parents: list[Architecture], seen: set[str], rng: random.Random
    ) -> list[Architecture]:
        evo = self.options.evolution
        n_mut = round(evo.population * evo.mutation_share)
        children: list[Architecture] = []
        tries = 0
        while len(children) < evo.population and tries < evo.max_tries * evo.population:
            tries += 1
            if len(children) < n_mut or len(parents) < 2:
                child = ctx.space.mutate(rng.choice(parents), rng, evo.mutation_rate)
            else:
                a, b = rng.sample(parents, 2)
                child = ctx.space.crossover(a, b, rng)
            if child.hash in seen or not ctx.feasible_arch(child):
                continue
            seen.add(child.hash)
            children.append(child)
        while len(children) < evo.population:  # the neighbourhood is exhausted: fill with fresh samples
            fresh = self._fresh(ctx, rng, seen)
            if fresh is None:
                break
            children.append(fresh)
        return children

    def evolve(self, ctx: SearchContext, supernet: Supernet) -> list[Candidate]:
        evo = self.options.evolution
        state = ctx.checkpoints.load("evolution")
        rng = random.Random(ctx.seed * 1_000_003 + 29)
        evaluated: dict[str, Candidate] = {}
        population: list[Architecture] = []
        generation = 0
        if state is not None:
            rng.setstate(_tuple(state["rng"]))
            evaluated = {c["arch_hash"]: Candidate.model_validate(c["candidate"]) for c in state["evaluated"]}
            population = [Architecture.model_validate(a) for a in state["population"]]
            generation = int(state["generation"])
            ctx.reporter.log(f"resumed evolution at generation {generation}/{evo.generations}", phase="evolution")
        total = evo.generations + 1
        ctx.reporter.phase_started("evolution", total=total)
        supernet.to(ctx.device)
        seen = set(evaluated)
        while generation < total:
            ctx.check_cancelled()
            if generation == 0:
                population = []
                while len(population) < evo.population and (arch := self._fresh(ctx, rng, seen)) is not None:
                    population.append(arch)
                if not population:
                    raise InvalidInput("constraints", "no architecture satisfies the constraints; relax the bounds")
            else:
                ranked = rank(list(evaluated.values()), ctx.objectives)
                parents = [c.arch for c in ranked[: evo.parents]]
                population = self._children(ctx, parents, seen, rng)
            for arch in population:
                ctx.check_cancelled()
                if arch.hash in evaluated:
                    continue
                cand = ctx.candidate(arch, {"accuracy": self.score(ctx, supernet, arch)})
                evaluated[arch.hash] = cand
                ctx.reporter.candidate("evolution", _arch_dict(arch), cand.metrics, len(evaluated))
            generation += 1
            best = rank(list(evaluated.values()), ctx.objectives)[0]
            ctx.reporter.progress("evolution", generation, total, {"best_accuracy": best.metrics["accuracy"]})
            path = ctx.checkpoints.save(
                "evolution",
                {
                    "rng": rng.getstate(),
                    "generation": generation,
                    "population": [_arch_dict(a) for a in population],
                    "evaluated": [
                        {"arch_hash": h, "candidate": c.model_dump(mode="json")} for h, c in evaluated.items()
                    ],
                },
            )
            ctx.reporter.checkpoint("evolution", str(path))
        ctx.reporter.phase_finished("evolution", {"evaluated": float(len(evaluated))})
        return list(evaluated.values())

    def run(self, ctx: SearchContext) -> SearchResult:
        self.check_space(ctx.space)
        supernet = self.train_supernet(ctx)
        candidates = self.evolve(ctx, supernet)
        front = mark_pareto(candidates, ctx.objectives)
        return SearchResult(
            strategy=self.name, candidates=candidates, best=rank(candidates, ctx.objectives), pareto=front
        )


def _tuple(value: Any) -> Any:
    """random.Random.setstate needs nested tuples; checkpoints may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_tuple(v) for v in value)
    return value
