from __future__ import annotations

from nas.arch import Architecture
from nas.objectives import is_feasible, mark_pareto, rank
from nas.spec import Candidate, ConstraintSpec


def cand(i: int, acc: float, params: float, feasible: bool = True) -> Candidate:
    arch = Architecture(space="toyconv", version="1", choices={"i": i})
    return Candidate(arch=arch, metrics={"accuracy": acc, "params": params}, feasible=feasible)


def test_pareto_front_and_ranking() -> None:
    cs = [cand(0, 0.9, 100), cand(1, 0.8, 50), cand(2, 0.7, 80), cand(3, 0.95, 200), cand(4, 0.99, 10, feasible=False)]
    front = mark_pareto(cs, ["accuracy", "params"])
    assert {c.arch.choices["i"] for c in front} == {0, 1, 3}
    assert [c.pareto for c in cs] == [True, True, False, True, False]
    ranked = rank(cs, ["accuracy"])
    assert [c.arch.choices["i"] for c in ranked] == [3, 0, 1, 2, 4]  # infeasible last
    ranked2 = rank(cs, ["accuracy", "params"])
    assert {c.arch.choices["i"] for c in ranked2[:3]} == {0, 1, 3} and ranked2[3].arch.choices["i"] == 2


def test_constraints() -> None:
    assert is_feasible({"macs": 10}, [ConstraintSpec(metric="macs", max=10)])
    assert not is_feasible({"macs": 11}, [ConstraintSpec(metric="macs", max=10)])
    assert not is_feasible({}, [ConstraintSpec(metric="latency", max=1)])
