"""The Strategy interface, the context a strategy runs in, and the strategy registry."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from nas.arch import Architecture
from nas.errors import InvalidInput, SearchCancelled
from nas.objectives import is_feasible, metric_key
from nas.registry import Registry
from nas.space import MacroBase, SearchSpace, parse_model
from nas.spec import Candidate, ConstraintSpec, SearchResult, Strict

if TYPE_CHECKING:
    import torch

    from nas.checkpoint import CheckpointStore
    from nas.data import DataSplits, DeviceLoader
    from nas.events import Reporter


class StrategyOptions(Strict):
    """Base of every strategy's ``Options``: strict like the spec (:class:`nas.spec.Strict`)."""


@dataclass
class SearchContext:
    """Everything a strategy may use. Strategies never touch files or the database except through this."""

    space: SearchSpace
    macro: MacroBase
    data: DataSplits
    device: torch.device
    checkpoints: CheckpointStore
    reporter: Reporter
    objectives: list[str] = field(default_factory=lambda: ["accuracy"])
    constraints: list[ConstraintSpec] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    seed: int = 0
    latency_input_size: int | None = None
    _costs: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise SearchCancelled("search cancelled")

    @property
    def cost_metrics(self) -> set[str]:
        """The cost metrics the objectives and constraints need (params and macs always)."""
        wanted = {"params", "macs"}
        wanted |= {o for o in self.objectives if o != "accuracy"}
        wanted |= {c.metric for c in self.constraints}
        return wanted

    def costs(self, arch: Architecture) -> dict[str, float]:
        """params, macs and (when needed) latency_ms of the standalone network, cached per architecture.

        Params and MACs are counted on the meta device (:func:`nas.measure.count_costs`: no weights, no random
        draws); the network is built for real only to time it, when latency is an objective or a constraint.
        """
        key = arch.hash
        if key not in self._costs:
            from nas.measure import measure_build_costs

            macro = self.macro.for_inference()
            size = self.latency_input_size or self.data.image_size
            self._costs[key] = measure_build_costs(
                lambda: self.space.build(arch, macro),
                (1, self.data.channels, size, size),
                device=self.device,
                latency="latency" in self.cost_metrics,
            )
        return dict(self._costs[key])

    def feasible(self, metrics: dict[str, float]) -> bool:
        return is_feasible(metrics, self.constraints)

    def feasible_arch(self, arch: Architecture) -> bool:
        """Cheap pre-check of the constraints from the costs alone (no training)."""
        return not self.constraints or is_feasible(self.costs(arch), self.constraints)

    def candidate(self, arch: Architecture, metrics: dict[str, float]) -> Candidate:
        full = {**self.costs(arch), **metrics}
        return Candidate(arch=arch, metrics=full, feasible=self.feasible(full))

    def loader(
        self, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed_offset: int = 0
    ) -> DeviceLoader:
        return self.data.loader(
            split, batch_size, shuffle=shuffle, augment=augment, device=self.device, seed=self.seed + seed_offset
        )

    def objective_values(self, c: Candidate) -> list[float]:
        return [c.metrics[metric_key(o)] for o in self.objectives]


class Strategy(ABC):
    """A search method. ``run`` must checkpoint its own state through ``ctx.checkpoints`` so that a second call with
    the same context after an interruption resumes and ends with the same result.

    ``tasks`` names the tasks (:mod:`nas.tasks`) the strategy can search for; ``check_space`` refuses spaces the
    strategy cannot search (e.g. a non-differentiable space for DARTS), naming the spec field to change."""

    name: ClassVar[str]
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    needs_differentiable: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    def __init__(self, options: Any = None) -> None:
        self.options = parse_model(self.Options, options, "strategy.options")

    @abstractmethod
    def run(self, ctx: SearchContext) -> SearchResult:
        """Search and return the evaluated candidates, best first in ``best``."""

    def worker_resources(self, runner_gpus: float) -> tuple[float, float]:
        """(CPUs, GPUs) the strategy's own Ray workers need besides the runner (the scheduler reserves both)."""
        return 0.0, 0.0

    def check_space(self, space: SearchSpace) -> None:
        if self.needs_differentiable and not space.supports_differentiable:
            raise InvalidInput("strategy.name", f"{self.name!r} needs a differentiable space; {space.name!r} is not")


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", field="strategy.name", group="nas.strategies")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class at run time (entry points are the normal way)."""
    return STRATEGIES.register(cls.name, cls)


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; InvalidInput('strategy.name') listing the allowed names if none."""
    return STRATEGIES.get(name)


def get_strategy(name: str, options: Any = None) -> Strategy:
    return strategy_class(name)(options)
