"""The generic registry (nas.registry) and the registries built on it: spaces, strategies, datasets, tasks."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from nas.data import dataset_info, dataset_names, describe_datasets
from nas.errors import InvalidInput
from nas.registry import Registry
from nas.space import SPACES, SearchSpace, get_space, space_class, space_names
from nas.strategies.base import STRATEGIES, Strategy, strategy_class, strategy_names
from nas.tasks import TASKS, get_task
from tests.toy_space import ToySpace


def plugins(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> Registry[object]:
    """A registry of the group 'test.widgets', installed with the entry points ``eps``."""

    def installed(group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr("nas.registry.entry_points", installed)
    return Registry("widget", field="widget.name", group="test.widgets")


def test_register_get_and_names() -> None:
    registry: Registry[int] = Registry("number", field="number")
    assert registry.register("two", 2) == 2
    registry.register("one", 1)
    assert registry.get("one") == 1 and registry.names() == ["one", "two"]
    assert "one" in registry and "three" not in registry and 1 not in registry


def test_unknown_name_names_the_field_and_lists_the_allowed_names() -> None:
    registry: Registry[int] = Registry("number", field="spec.number")
    with pytest.raises(InvalidInput) as info:
        registry.get("x")
    assert (info.value.field, info.value.message) == ("spec.number", "unknown number 'x'; allowed: none")
    registry.register("b", 2)
    registry.register("a", 1)
    with pytest.raises(InvalidInput, match=r"unknown number 'x'; allowed: a, b$"):
        registry.get("x")


def test_entry_points_are_listed_without_loading_and_loaded_on_get(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = plugins(
        monkeypatch,
        EntryPoint("json", "json:dumps", "test.widgets"),
        EntryPoint("broken", "nas_no_such_plugin_module:thing", "test.widgets"),
        EntryPoint("elsewhere", "json:loads", "other.group"),
    )
    assert registry.names() == ["broken", "json"]  # listing imports nothing
    import json

    assert registry.get("json") is json.dumps
    with pytest.raises(ModuleNotFoundError):  # only asking for it loads it
        registry.get("broken")


def test_code_registration_wins_over_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = plugins(monkeypatch, EntryPoint("json", "json:dumps", "test.widgets"))
    registry.register("json", "mine")
    assert registry.get("json") == "mine" and registry.names() == ["json"]


def test_the_real_entry_point_groups_load_the_packaged_plug_ins() -> None:
    assert {"hytra", "nasnet", "bossnas-mbconv"} <= set(SPACES.entry_points())
    assert {"spos", "darts", "optuna", "random", "bossnas"} <= set(STRATEGIES.entry_points())
    assert issubclass(space_class("hytra"), SearchSpace) and issubclass(strategy_class("bossnas"), Strategy)


def test_space_registry() -> None:
    assert {"hytra", "nasnet", "bossnas-mbconv", "toyconv"} <= set(space_names())  # entry points + registered
    assert space_class("toyconv") is ToySpace
    with pytest.raises(InvalidInput) as info:
        get_space("nope")
    assert info.value.field == "space" and "allowed: " in info.value.message and "hytra" in info.value.message


def test_strategy_registry() -> None:
    assert {"spos", "darts", "optuna", "random", "bossnas"} <= set(strategy_names())
    with pytest.raises(InvalidInput) as info:
        strategy_class("nope")
    assert info.value.field == "strategy.name" and "bossnas" in info.value.message


def test_dataset_registry() -> None:
    assert "digits" in dataset_names() and dataset_info("digits").num_classes == 10
    with pytest.raises(InvalidInput) as info:
        dataset_info("nope")
    assert info.value.field == "dataset.name" and "digits" in info.value.message
    described = {d["name"]: d for d in describe_datasets()}
    assert described["digits"]["tasks"] == ["classification"]
    assert set(described["shapes"]["tasks"]) == {"classification", "segmentation", "detection"}


def test_task_registry() -> None:
    assert TASKS.names() == ["classification", "detection", "segmentation"]
    with pytest.raises(InvalidInput) as info:
        get_task("captioning")
    assert info.value.field == "task" and "classification, detection, segmentation" in info.value.message
