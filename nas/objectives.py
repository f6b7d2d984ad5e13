"""Objectives, constraints and Pareto fronts over candidates."""

from __future__ import annotations

from collections.abc import Sequence

from nas.spec import Candidate, ConstraintSpec

# accuracy is maximised; every cost is minimised
METRIC_KEYS = {"accuracy": "accuracy", "params": "params", "macs": "macs", "latency": "latency_ms"}


def metric_key(metric: str) -> str:
    return METRIC_KEYS.get(metric, metric)


def signed(metric: str, value: float) -> float:
    """The value turned into something to minimise."""
    return -value if metric == "accuracy" else value


def is_feasible(metrics: dict[str, float], constraints: Sequence[ConstraintSpec]) -> bool:
    return all(metrics.get(metric_key(c.metric), float("inf")) <= c.max for c in constraints)


def violation(metrics: dict[str, float], constraints: Sequence[ConstraintSpec]) -> float:
    """Sum of relative excesses over the bounds (0 when feasible)."""
    total = 0.0
    for c in constraints:
        value = metrics.get(metric_key(c.metric), float("inf"))
        if value > c.max:
            total += (value - c.max) / c.max
    return total


def _vector(c: Candidate, objectives: Sequence[str]) -> tuple[float, ...]:
    return tuple(signed(o, c.metrics.get(metric_key(o), float("inf"))) for o in objectives)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(candidates: Sequence[Candidate], objectives: Sequence[str]) -> list[Candidate]:
    """The feasible candidates no other feasible candidate dominates (one per architecture)."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        if c.feasible:
            seen.setdefault(c.arch.hash, c)
    pool = list(seen.values())
    vectors = [_vector(c, objectives) for c in pool]
    return [
        c for i, c in enumerate(pool) if not any(dominates(vectors[j], vectors[i]) for j in range(len(pool)) if j != i)
    ]


def rank(candidates: Sequence[Candidate], objectives: Sequence[str]) -> list[Candidate]:
    """Best first: feasible before infeasible, then by non-dominated front, then by the first objective."""
    pool = list(candidates)
    order: list[Candidate] = []
    remaining = [c for c in pool if c.feasible]
    while remaining:
        front = pareto_front(remaining, objectives)
        ids = {c.arch.hash for c in front}
        front.sort(key=lambda c: _vector(c, objectives))
        order.extend(front)
        remaining = [c for c in remaining if c.arch.hash not in ids]
    order.extend(sorted((c for c in pool if not c.feasible), key=lambda c: _vector(c, objectives)))
    return order


def mark_pareto(candidates: list[Candidate], objectives: Sequence[str]) -> list[Candidate]:
    """Set ``pareto`` on every candidate in place; return the front."""
    front = pareto_front(candidates, objectives)
    ids = {c.arch.hash for c in front}
    for c in candidates:
        c.pareto = c.arch.hash in ids and c.feasible
    return front
