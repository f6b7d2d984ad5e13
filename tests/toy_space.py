"""A tiny search space for fast engine tests: three layers, each a 3x3 conv, a 5x5 conv or identity."""

from __future__ import annotations

import math
import random
from typing import Any

from pydantic import Field
from torch import Tensor, nn

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import MacroBase, SearchSpace, register_space
from nas.supernet import LayerChoice, Supernet

OPS = ("conv3", "conv5", "skip")
LAYERS = 3


class ToyMacro(MacroBase):
    width: int = Field(8, ge=1, le=256)


def make_op(name: str, width: int) -> nn.Module:
    if name == "skip":
        return nn.Identity()
    k = 3 if name == "conv3" else 5
    return nn.Sequential(nn.Conv2d(width, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU())


class ToyNet(nn.Module):
    def __init__(self, layers: list[nn.Module], macro: ToyMacro) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(macro.in_channels, macro.width, 3, padding=1, bias=False), nn.BatchNorm2d(macro.width)
        )
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(macro.width, macro.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean((2, 3)))


class ToySupernet(Supernet):
    def __init__(self, space: ToySpace, macro: ToyMacro) -> None:
        super().__init__()
        self.space, self.macro = space, macro
        self.net = ToyNet([LayerChoice({o: make_op(o, macro.width) for o in OPS}) for _ in range(LAYERS)], macro)

    def set_active(self, arch: Architecture) -> None:
        for layer, op in zip(self.net.layers, arch.choices["ops"], strict=True):
            layer.choose(op)

    def extract(self, arch: Architecture) -> nn.Module:
        model = self.space.build(arch, self.macro)
        state = {}
        for key, value in self.net.state_dict().items():
            parts = key.split(".")
            if parts[0] == "layers":
                if parts[3] != arch.choices["ops"][int(parts[1])]:
                    continue
                key = ".".join(parts[:2] + parts[4:])
            state[key] = value
        model.load_state_dict(state)
        return model

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ToySpace(SearchSpace):
    name = "toyconv"
    version = "1"
    Macro = ToyMacro

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({"ops": [rng.choice(OPS) for _ in range(LAYERS)]})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        ops = list(arch.choices["ops"])
        i = rng.randrange(LAYERS)
        ops[i] = rng.choice([o for o in OPS if o != ops[i]])
        for j in range(LAYERS):
            if j != i and rng.random() < rate:
                ops[j] = rng.choice(OPS)
        return self.make({"ops": ops})

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        return self.make({"ops": [rng.choice(pair) for pair in zip(a.choices["ops"], b.choices["ops"], strict=True)]})

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        ops = arch.choices.get("ops")
        if not isinstance(ops, list) or len(ops) != LAYERS:
            raise InvalidInput("architecture.choices.ops", f"must be a list of {LAYERS} ops")
        for i, op in enumerate(ops):
            if op not in OPS:
                raise InvalidInput(f"architecture.choices.ops[{i}]", f"unknown op {op!r}; allowed: {', '.join(OPS)}")

    def log10_size(self) -> float:
        return LAYERS * math.log10(len(OPS))

    def choices_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {"ops": {"type": "array", "items": {"enum": list(OPS)}}}}

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        self.validate(arch)
        m = self.macro(macro)
        return ToyNet([make_op(op, m.width) for op in arch.choices["ops"]], m)

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        return ToySupernet(self, self.macro(macro))

    def fair_paths(self, rng: random.Random) -> list[Architecture]:
        perms = [rng.sample(OPS, len(OPS)) for _ in range(LAYERS)]
        return [self.make({"ops": [perm[k] for perm in perms]}) for k in range(len(OPS))]


register_space(ToySpace)
