"""Random search on a toy space and toy data: budget, constraints, determinism, exact resume.

The toy space and data here are shared with tests/test_strategy_multitrial.py.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.data.base import DataSplits, Split
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, ListReporter
from nas.space import MacroBase, SearchSpace, register_space
from nas.spec import ConstraintSpec, SearchResult
from nas.strategies.base import SearchContext, Strategy, get_strategy
from nas.strategies.random_search import RandomStrategy

CHOICES: dict[str, list[Any]] = {"width": [4, 8], "kernel": [1, 3], "depth": [1, 2], "act": ["relu", "tanh"]}


class ToyNet(nn.Module):
    def __init__(self, choices: dict[str, Any], macro: MacroBase) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = macro.in_channels
        for _ in range(choices["depth"]):
            k = choices["kernel"]
            layers += [
                nn.Conv2d(cin, choices["width"], k, padding=k // 2, bias=False),
                nn.BatchNorm2d(choices["width"]),
            ]
            layers.append(nn.ReLU() if choices["act"] == "relu" else nn.Tanh())
            cin = choices["width"]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, macro.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class ToySpace(SearchSpace):
    """16 tiny conv nets."""

    name = "toy-strategies"
    version = "1"

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({k: rng.choice(v) for k, v in CHOICES.items()})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        key = rng.choice(list(CHOICES))
        choices = dict(arch.choices)
        choices[key] = rng.choice([v for v in CHOICES[key] if v != choices[key]])
        return self.make(choices)

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        return self.make({k: rng.choice([a.choices[k], b.choices[k]]) for k in CHOICES})

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        for key, allowed in CHOICES.items():
            if arch.choices.get(key) not in allowed:
                raise InvalidInput(f"architecture.choices.{key}", f"allowed: {allowed}")

    def log10_size(self) -> float:
        return math.log10(16)

    def choices_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        return ToyNet(dict(arch.choices), self.macro(macro))

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Any:
        raise NotImplementedError


register_space(ToySpace)


def toy_data(n_train: int = 64, n_val: int = 32, size: int = 8, seed: int = 0) -> DataSplits:
    """Two learnable classes: class 1 images are brighter in their top half."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randint(0, 120, (n, 3, size, size), generator=g)
        x[:, :, : size // 2] += (y * 100).view(-1, 1, 1, 1)
        return Split(x=x.to(torch.uint8), y=y)

    return DataSplits(
        name="toy",
        num_classes=2,
        channels=3,
        image_size=size,
        train=split(n_train),
        val=split(n_val),
        test=split(n_val),
        mean=(0.4, 0.4, 0.4),
        std=(0.25, 0.25, 0.25),
        class_names=["dark", "bright"],
    )


class CancelAfter(ListReporter):
    """Sets the context's cancel flag after ``n`` events of type ``kind``."""

    def __init__(self, n: int, kind: EventType = EventType.CANDIDATE) -> None:
        super().__init__()
        self.n = n
        self.kind = kind
        self.ctx: SearchContext | None = None

    def emit(self, event: Event) -> None:
        super().emit(event)
        if self.ctx is not None and len(self.of_type(self.kind)) >= self.n:
            self.ctx.cancel.set()


def make_ctx(
    folder: Path,
    space: SearchSpace | None = None,
    reporter: ListReporter | None = None,
    data: DataSplits | None = None,
    macro: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SearchContext:
    space = space or ToySpace()
    data = data or toy_data()
    ctx = SearchContext(
        space=space,
        macro=space.macro(macro, num_classes=data.num_classes, in_channels=data.channels),
        data=data,
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(folder),
        reporter=reporter or ListReporter(),
        **kwargs,
    )
    if isinstance(reporter, CancelAfter):
        reporter.ctx = ctx
    return ctx


def summary(result: SearchResult) -> list[tuple[str, dict[str, float]]]:
    """What must match between two runs (latency excluded: it is a measurement)."""
    return [(c.arch.hash, {k: v for k, v in c.metrics.items() if k != "latency_ms"}) for c in result.candidates]


def run_interrupted(strategy: Strategy, folder: Path, n: int, kind: EventType = EventType.CANDIDATE, **kw: Any):
    """Run until ``n`` events of ``kind`` then cancel; then run again with a fresh context on the same folder."""
    reporter = CancelAfter(n, kind)
    with pytest.raises(SearchCancelled):
        strategy.run(make_ctx(folder, reporter=reporter, **kw))
    second = ListReporter()
    return strategy.run(make_ctx(folder, reporter=second, **kw)), reporter, second


TRAIN = {"epochs": 1, "batch_size": 16, "lr": 0.05}


def test_options_are_validated_with_field_names() -> None:
    with pytest.raises(InvalidInput) as err:
        RandomStrategy({"trials": -1})
    assert err.value.field == "strategy.options.trials"
    with pytest.raises(InvalidInput) as err:
        RandomStrategy({"train": {"epochs": 0}})
    assert err.value.field == "strategy.options.train"
    with pytest.raises(InvalidInput) as err:
        RandomStrategy({"trails": 3})
    assert err.value.field == "strategy.options.trails"


def test_registered_by_entry_point() -> None:
    assert isinstance(get_strategy("random", {"trials": 2}), RandomStrategy)


def test_random_search_trains_distinct_candidates_and_ranks_them(tmp_path: Path) -> None:
    reporter = ListReporter()
    result = RandomStrategy({"trials": 4, "train": TRAIN}).run(make_ctx(tmp_path, reporter=reporter))
    assert result.strategy == "random"
    assert len(result.candidates) == 4
    assert len({c.arch.hash for c in result.candidates}) == 4
    for c in result.candidates:
        assert 0.0 <= c.metrics["accuracy"] <= 1.0
        assert c.metrics["params"] > 0 and c.metrics["macs"] > 0
        assert c.metrics["epochs"] == 1.0
    accs = [c.metrics["accuracy"] for c in result.best]
    assert accs == sorted(accs, reverse=True)
    assert result.pareto and all(c.pareto for c in result.pareto)
    events = reporter.of_type(EventType.CANDIDATE)
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert [Architecture.from_dict(e.data["arch"]).hash for e in events] == [c.arch.hash for c in result.candidates]


def test_same_seed_same_result_other_seed_other_archs(tmp_path: Path) -> None:
    opts = {"trials": 3, "train": TRAIN}
    a = RandomStrategy(opts).run(make_ctx(tmp_path / "a", seed=3))
    b = RandomStrategy(opts).run(make_ctx(tmp_path / "b", seed=3))
    c = RandomStrategy(opts).run(make_ctx(tmp_path / "c", seed=4))
    assert summary(a) == summary(b)
    assert [x.arch.hash for x in a.candidates] != [x.arch.hash for x in c.candidates]


def test_infeasible_architectures_are_skipped_untrained(tmp_path: Path) -> None:
    space = ToySpace()
    macro = space.macro(num_classes=2)
    sizes = sorted(
        sum(p.numel() for p in space.build(space.make(dict(zip(CHOICES, v, strict=True))), macro).parameters())
        for v in [(w, k, d, "relu") for w in (4, 8) for k in (1, 3) for d in (1, 2)]
    )
    limit = float(sizes[3])  # 4 of the 8 (x2 activations) shapes fit
    reporter = ListReporter()
    ctx = make_ctx(tmp_path, reporter=reporter, constraints=[ConstraintSpec(metric="params", max=limit)])
    result = RandomStrategy({"trials": 6, "train": TRAIN}).run(ctx)
    assert len(result.candidates) == 6
    assert all(c.feasible and c.metrics["params"] <= limit for c in result.candidates)
    assert result.extra["skipped"] > 0


def test_small_space_stops_after_max_skips(tmp_path: Path) -> None:
    reporter = ListReporter()
    ctx = make_ctx(tmp_path, reporter=reporter, constraints=[ConstraintSpec(metric="params", max=1.0)])
    result = RandomStrategy({"trials": 2, "train": TRAIN, "max_skips": 20}).run(ctx)
    assert result.candidates == []
    assert any("skipped" in (e.message or "") for e in reporter.of_type(EventType.LOG))


def test_resume_after_cancellation_matches_uninterrupted_run(tmp_path: Path) -> None:
    opts = {"trials": 4, "train": TRAIN}
    full = RandomStrategy(opts).run(make_ctx(tmp_path / "full", seed=1))
    resumed, first, second = run_interrupted(RandomStrategy(opts), tmp_path / "resumed", 2, seed=1)
    assert len(first.of_type(EventType.CANDIDATE)) == 2
    assert len(second.of_type(EventType.CANDIDATE)) == 2  # only the remaining trials ran again
    assert summary(resumed) == summary(full)
    assert [c.arch.hash for c in resumed.best] == [c.arch.hash for c in full.best]
