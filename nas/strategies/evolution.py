"""Constrained evolutionary search over whole architectures, shared by the one-shot strategies (SPOS, BossNAS).

Generation 0 draws ``population`` fresh feasible architectures; every later generation breeds children from the
``parents`` best candidates so far (``mutation_share`` by mutation, the rest by crossover), skipping architectures
seen before or infeasible under the constraints (a cheap pre-check from the costs alone), and fills up with fresh
samples when the neighbourhood is exhausted. The state (RNG, generation, population, every evaluated candidate) is
checkpointed after each generation, so an interrupted search resumes exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.objectives import rank
from nas.spec import Candidate
from nas.strategies.base import StrategyOptions

if TYPE_CHECKING:
    from nas.strategies.base import SearchContext

EvaluateFn = Callable[[Architecture], dict[str, float]]
SampleFn = Callable[[random.Random], Architecture]
AcceptFn = Callable[[Architecture], bool]


class EvolutionOptions(StrategyOptions):
    population: int = Field(20, ge=2, le=10_000)
    generations: int = Field(10, ge=0, le=10_000)
    parents: int = Field(8, ge=1, le=10_000, description="top candidates that breed the next generation")
    mutation_rate: float = Field(0.1, gt=0.0, le=1.0)
    mutation_share: float = Field(0.5, ge=0.0, le=1.0, description="share of children made by mutation")
    max_tries: int = Field(200, ge=1, le=100_000, description="attempts to draw a feasible architecture")


def arch_dict(arch: Architecture) -> dict[str, Any]:
    return arch.model_dump(mode="json")


def python_state(value: Any) -> Any:
    """random.Random.setstate needs nested tuples; checkpoints may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(python_state(v) for v in value)
    return value


class Evolution:
    """One evolutionary search.

    ``evaluate(arch)`` returns the candidate's metrics (the costs are added by ``ctx.candidate``). ``objectives``
    rank the candidates (default: the context's). ``best_metric`` names the metric reported as ``best_<metric>``
    after each generation. ``sample`` draws an architecture (default ``ctx.space.sample``); ``accept`` may refuse
    architectures besides the constraint pre-check (e.g. those a strategy cannot score).
    """

    def __init__(
        self,
        ctx: SearchContext,
        options: EvolutionOptions,
        evaluate: EvaluateFn,
        *,
        objectives: Sequence[str] | None = None,
        best_metric: str = "accuracy",
        sample: SampleFn | None = None,
        accept: AcceptFn | None = None,
        checkpoint: str = "evolution",
        phase: str = "evolution",
    ) -> None:
        self.ctx = ctx
        self.options = options
        self.evaluate = evaluate
        self.objectives = list(objectives if objectives is not None else ctx.objectives)
        self.best_metric = best_metric
        self.sample = sample or ctx.space.sample
        self.accept = accept
        self.checkpoint = checkpoint
        self.phase = phase

    def _ok(self, arch: Architecture, seen: set[str]) -> bool:
        if arch.hash in seen:
            return False
        if self.accept is not None and not self.accept(arch):
            return False
        return self.ctx.feasible_arch(arch)

    def fresh(self, rng: random.Random, seen: set[str]) -> Architecture | None:
        """A feasible architecture not seen before, or None when ``max_tries`` draws found none."""
        for _ in range(self.options.max_tries):
            arch = self.sample(rng)
            if self._ok(arch, seen):
                seen.add(arch.hash)
                return arch
        return None

    def children(self, parents: list[Architecture], seen: set[str], rng: random.Random) -> list[Architecture]:
        evo = self.options
        space = self.ctx.space
        n_mut = round(evo.population * evo.mutation_share)
        children: list[Architecture] = []
        tries = 0
        while len(children) < evo.population and tries < evo.max_tries * evo.population:
            tries += 1
            if len(children) < n_mut or len(parents) < 2:
                child = space.mutate(rng.choice(parents), rng, evo.mutation_rate)
            else:
                a, b = rng.sample(parents, 2)
                child = space.crossover(a, b, rng)
            if not self._ok(child, seen):
                continue
            seen.add(child.hash)
            children.append(child)
        while len(children) < evo.population:  # the neighbourhood is exhausted: fill with fresh samples
            fresh = self.fresh(rng, seen)
            if fresh is None:
                break
            children.append(fresh)
        return children

    def run(self, rng: random.Random) -> list[Candidate]:
        """Evolve (resuming from the checkpoint when there is one); every evaluated candidate, in evaluation order.

        ``rng`` is the search's generator in its initial state (replaced by the checkpointed state on resume)."""
        ctx, evo = self.ctx, self.options
        state = ctx.checkpoints.load(self.checkpoint)
        evaluated: dict[str, Candidate] = {}
        population: list[Architecture] = []
        generation = 0
        if state is not None:
            rng.setstate(python_state(state["rng"]))
            evaluated = {c["arch_hash"]: Candidate.model_validate(c["candidate"]) for c in state["evaluated"]}
            population = [Architecture.model_validate(a) for a in state["population"]]
            generation = int(state["generation"])
            ctx.reporter.log(f"resumed evolution at generation {generation}/{evo.generations}", phase=self.phase)
        total = evo.generations + 1
        ctx.reporter.phase_started(self.phase, total=total)
        seen = set(evaluated)
        while generation < total:
            ctx.check_cancelled()
            if generation == 0:
                population = []
                while len(population) < evo.population and (arch := self.fresh(rng, seen)) is not None:
                    population.append(arch)
                if not population:
                    raise InvalidInput("constraints", "no architecture satisfies the constraints; relax the bounds")
            else:
                ranked = rank(list(evaluated.values()), self.objectives)
                parents = [c.arch for c in ranked[: evo.parents]]
                population = self.children(parents, seen, rng)
            for arch in population:
                ctx.check_cancelled()
                if arch.hash in evaluated:
                    continue
                cand = ctx.candidate(arch, self.evaluate(arch))
                evaluated[arch.hash] = cand
                ctx.reporter.candidate(self.phase, arch_dict(arch), cand.metrics, len(evaluated))
            generation += 1
            best = rank(list(evaluated.values()), self.objectives)[0]
            ctx.reporter.progress(
                self.phase, generation, total, {f"best_{self.best_metric}": best.metrics[self.best_metric]}
            )
            path = ctx.checkpoints.save(
                self.checkpoint,
                {
                    "rng": rng.getstate(),
                    "generation": generation,
                    "population": [arch_dict(a) for a in population],
                    "evaluated": [
                        {"arch_hash": h, "candidate": c.model_dump(mode="json")} for h, c in evaluated.items()
                    ],
                },
            )
            ctx.reporter.checkpoint(self.phase, str(path))
        ctx.reporter.phase_finished(self.phase, {"evaluated": float(len(evaluated))})
        return list(evaluated.values())
