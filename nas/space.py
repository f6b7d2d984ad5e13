"""The SearchSpace interface, the optional capabilities a space may have, and the registry of spaces (spaces plug in
through the ``nas.spaces`` entry point).

Capabilities are typed protocols, checked with ``isinstance`` by the strategies that use them:

- :class:`FairPaths`: ``fair_paths(rng)``, FairNAS strict fairness (SPOS with ``strict_fairness``);
- :class:`Suggest`: ``suggest(trial)``, Optuna define-by-run proposals (the ``optuna`` strategy);
- block-wise spaces (HyTra, BossNAS's MBConv) list their blocks in :meth:`SearchSpace.blocks` and build a supernet
  implementing :class:`nas.supernet.BlockwiseSupernet` (BossNAS);
- the tasks a space serves are in ``SearchSpace.tasks`` (see :mod:`nas.tasks`).
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.registry import Registry
from nas.spec import Strict

if TYPE_CHECKING:
    from optuna.trial import Trial
    from torch import nn

    from nas.supernet import Supernet


class MacroBase(Strict):
    """Macro settings every space accepts: what the dataset dictates. Spaces subclass it with their own fields.

    Strict like the spec (:class:`nas.spec.Strict`): no bool or string for a number, no number for a string.
    """

    num_classes: int = Field(10, ge=1, le=100_000)
    in_channels: int = Field(3, ge=1, le=64)

    def for_inference(self) -> MacroBase:
        """The macro of the deployed network (e.g. without training-only heads); params are reported for it."""
        return self


class OptionsBase(Strict):
    """Options that change the space itself (which ops exist, ...). Spaces subclass it. Strict like the spec."""


class Preset(BaseModel):
    """A published architecture with the macro settings it was published with."""

    model_config = ConfigDict(frozen=True)

    name: str
    arch: Architecture
    macro: dict[str, Any]
    input_size: int
    description: str = ""
    reference: str = ""


@dataclass(frozen=True)
class BlockInfo:
    """One independently trainable block of a block-wise space (HyTra, MBConv): its index, its name and its
    candidate paths (an op index per layer)."""

    index: int
    name: str
    candidates: list[tuple[int, ...]] = field(default_factory=list)


@runtime_checkable
class FairPaths(Protocol):
    """A space that draws FairNAS strict-fairness groups (Chu et al., ICCV 2021): ``fair_paths(rng)`` returns a group
    of architectures in which every choice of every layer appears equally often (NASNet: every op equally often, every
    input choice at least once and equally often up to one). SPOS with ``strict_fairness`` trains the supernet on one
    such group per step (NASNet has it, HyTra and MBConv do not)."""

    def fair_paths(self, rng: random.Random) -> list[Architecture]: ...


@runtime_checkable
class Suggest(Protocol):
    """A space that proposes architectures define-by-run through an Optuna trial (one ``trial.suggest_*`` call per
    choice), so Optuna's samplers see the choices; the ``optuna`` strategy samples uniformly from other spaces."""

    def suggest(self, trial: Trial) -> Architecture: ...


def parse_model(model: type[BaseModel], data: Any, where: str) -> Any:
    """Validate ``data`` with a pydantic model, turning the first error into an InvalidInput naming the field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{where}.{loc}" if loc else where, err["msg"]) from exc


class SearchSpace(ABC):
    """A family of architectures, with the operations a search needs.

    Spaces are configured by ``Options`` (what is in the space) and build networks from an Architecture and a
    ``Macro`` (how big and for which data). Block-wise spaces override :meth:`blocks` and build a supernet that
    implements :class:`nas.supernet.BlockwiseSupernet`; ``tasks`` names the tasks (:mod:`nas.tasks`) the space's
    networks serve, classification unless a space says otherwise. Optional capabilities: :class:`FairPaths`,
    :class:`Suggest`.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type[OptionsBase]] = OptionsBase
    Macro: ClassVar[type[MacroBase]] = MacroBase
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    supports_differentiable: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = parse_model(self.Options, options, "space.options")

    # --- architectures -------------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: random.Random) -> Architecture:
        """A uniformly random architecture."""

    @abstractmethod
    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        """A copy of ``arch`` with each choice resampled with probability ``rate`` (at least one changes)."""

    @abstractmethod
    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        """A child taking each choice from ``a`` or ``b``; always valid."""

    @abstractmethod
    def validate(self, arch: Architecture) -> None:
        """Raise InvalidInput naming the first bad field of ``arch``."""

    @abstractmethod
    def log10_size(self) -> float:
        """log10 of the number of distinct architectures."""

    @abstractmethod
    def choices_schema(self) -> dict[str, Any]:
        """JSON schema of ``Architecture.choices`` for this space."""

    def make(self, choices: dict[str, Any]) -> Architecture:
        """Wrap and validate choices as an Architecture of this space."""
        arch = Architecture(space=self.name, version=self.version, choices=choices)
        self.validate(arch)
        return arch

    def check_space(self, arch: Architecture) -> None:
        """The checks every space's ``validate`` starts with."""
        if arch.space != self.name:
            raise InvalidInput("architecture.space", f"is {arch.space!r}, expected {self.name!r}")
        if arch.version != self.version:
            raise InvalidInput("architecture.version", f"is {arch.version!r}, this space is {self.version!r}")

    # --- networks ------------------------------------------------------------------------------------------
    def macro(self, macro: Any = None, **overrides: Any) -> MacroBase:
        data = dict(macro.model_dump() if isinstance(macro, BaseModel) else (macro or {}))
        data.update(overrides)
        return parse_model(self.Macro, data, "macro")

    @abstractmethod
    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        """A standalone network for ``arch``; its forward maps images (N, C, H, W) to logits (N, num_classes)."""

    @abstractmethod
    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        """The weight-sharing supernet. ``mode`` is 'single_path' or, where supported, 'differentiable'."""

    def blocks(self) -> list[BlockInfo] | None:
        """The independently trainable blocks of a block-wise space; None for other spaces. A space that lists
        blocks builds a supernet implementing :class:`nas.supernet.BlockwiseSupernet`."""
        return None

    def standalone_modules(self) -> list[ModuleType]:
        """Modules (torch-only imports) whose source, concatenated, defines ``build_network(choices, macro)``.

        Used by the exporter to write a Python file that rebuilds the network without this project.
        """
        return []

    # --- presets -------------------------------------------------------------------------------------------
    def presets(self) -> dict[str, Preset]:
        return {}

    def preset(self, name: str) -> Preset:
        presets = self.presets()
        if name not in presets:
            allowed = ", ".join(sorted(presets)) or "none"
            raise InvalidInput("preset", f"unknown preset {name!r} of space {self.name!r}; allowed: {allowed}")
        return presets[name]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "options": self.options.model_dump(mode="json"),
            "options_schema": self.Options.model_json_schema(),
            "macro_schema": self.Macro.model_json_schema(),
            "choices_schema": self.choices_schema(),
            "log10_size": round(self.log10_size(), 3),
            "tasks": list(self.tasks),
            "differentiable": self.supports_differentiable,
            "block_wise": self.blocks() is not None,
            "presets": {
                name: {"description": p.description, "input_size": p.input_size, "reference": p.reference}
                for name, p in self.presets().items()
            },
        }


def log10_sum(terms: list[float]) -> float:
    """log10 of a sum of numbers given as log10 values, without overflow."""
    top = max(terms)
    return top + math.log10(sum(10 ** (t - top) for t in terms))


SPACES: Registry[type[SearchSpace]] = Registry("space", field="space", group="nas.spaces")


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Register a space class at run time (entry points are the normal way)."""
    return SPACES.register(cls.name, cls)


def space_names() -> list[str]:
    return SPACES.names()


def space_class(name: str) -> type[SearchSpace]:
    """The space class registered as ``name``; InvalidInput('space') listing the allowed names if none is."""
    return SPACES.get(name)


def get_space(name: str, **options: Any) -> SearchSpace:
    """The space registered as ``name``, configured with ``options``."""
    return space_class(name)(**options)


def resolve_arch_ref(ref: str) -> tuple[SearchSpace, Architecture, dict[str, Any], int | None]:
    """Resolve 'SPACE:PRESET' or a path to an architecture JSON file to (space, arch, macro, input_size)."""
    from pathlib import Path

    path = Path(ref)
    if ":" in ref and not path.exists():
        space_name, _, preset_name = ref.partition(":")
        space = get_space(space_name)
        preset = space.preset(preset_name)
        return space, preset.arch, dict(preset.macro), preset.input_size
    if not path.exists():
        raise InvalidInput("architecture", f"{ref!r} is neither SPACE:PRESET nor an existing JSON file")
    import json

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput("architecture", f"{ref!r} is not a JSON file: {exc}") from exc
    arch = Architecture.from_dict(data)
    options = data.get("space_options", {}) if isinstance(data, dict) else {}
    macro = data.get("macro", {}) if isinstance(data, dict) else {}
    space = get_space(arch.space, **options)
    space.validate(arch)
    return space, arch, dict(macro), data.get("input_size") if isinstance(data, dict) else None
