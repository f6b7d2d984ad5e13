"""Standalone HyTra networks: the search-space network of a path (``form="search"``) and BossNet's retraining
network (``form="retrain"``), both from the same choices (see docs/hytra.md).

- search: stem -> stem adapter to the first layer's level -> 16 layers, each at its op's level, reading its input
  through the 'same' or the stride-2 'down' branch -> global average pool -> [dropout] -> linear. Widths per level.
- retrain (BossNet, timm-ResNet style): stem -> 4 stages (stage s = the layers at level s, in order; widths per
  stage, the stage's stride in its first layer, ResNet-D shortcuts, optional SE in ResConv, linear drop path over
  the 16 layers in ResConv) -> pool -> linear. A stage without layers becomes a 3x3 conv (stride) + BN + act.

:func:`build_network` takes plain dicts (no pydantic) and imports only torch and the standalone modules, so the
exporter can write it into a self-contained ``model.py``.
"""

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from nas.ops.se import activation_layer
from searchspaces.hytra.encoding import NUM_LAYERS, NUM_LEVELS, OP_KIND, OP_LEVEL
from searchspaces.hytra.ops import ResAtt, ResConv, StemAdapter, attention_heads, conv_bn_act, init_weights

HYTRA_MACRO_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 3,
    "form": "search",
    "stem": "imagenet",
    "stem_channels": 64,
    "widths": [256, 512, 1024, 2048],
    "bottlenecks": None,
    "head_dim": 64,
    "activation": "relu",
    "se": False,
    "drop_path": 0.0,
    "stage_strides": [1, 2, 2, 2],
    "dropout": 0.0,
    "image_size": 224,
}


def fill_hytra_macro(macro: dict[str, Any] | None) -> dict[str, Any]:
    """The macro dict with defaults for missing (or None) entries."""
    out = dict(HYTRA_MACRO_DEFAULTS)
    out.update({k: v for k, v in (macro or {}).items() if v is not None})
    return out


def level_widths(macro: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(output widths, bottleneck widths) per level (or per stage in the retraining form)."""
    widths = [int(w) for w in macro["widths"]]
    bottlenecks = macro.get("bottlenecks")
    planes = [int(p) for p in bottlenecks] if bottlenecks else [max(1, w // 4) for w in widths]
    return widths, planes


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a standalone network: an op ('att', 'conv') or a 'transition' conv of an empty stage."""

    kind: str
    c_in: int
    planes: int
    c_out: int
    branch: str  # 'same' or 'down' (stride 2)
    level: int
    drop_path: float = 0.0


def stem_output_size(size: int, stem: str) -> int:
    """Side of the stem's output for an input side ``size``."""
    return math.ceil(math.ceil(size / 2) / 2) if stem == "imagenet" else size


def build_stem(macro: dict[str, Any]) -> nn.Sequential:
    """ImageNet: 7x7 conv stride 2 + BN + act + 3x3 max pool stride 2. Small: 3x3 conv stride 1 + BN + act."""
    c_in, c, act = int(macro["in_channels"]), int(macro["stem_channels"]), str(macro["activation"])
    if macro["stem"] == "imagenet":
        return nn.Sequential(
            nn.Conv2d(c_in, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), activation_layer(act), nn.MaxPool2d(3, 2, 1)
        )
    if macro["stem"] == "small":
        return conv_bn_act(c_in, c, 3, 1, act)
    raise ValueError(f"unknown stem {macro['stem']!r}; allowed: imagenet, small")


def search_plan(ops: list[int], macro: dict[str, Any]) -> list[LayerSpec]:
    """Layers of the search-space network (the first layer reads the stem adapter's output at its level)."""
    widths, planes = level_widths(macro)
    rate, n = float(macro["drop_path"]), len(ops)
    specs: list[LayerSpec] = []
    prev = -1
    for i, op in enumerate(ops):
        lv = OP_LEVEL[op]
        c_in = planes[lv] if i == 0 else widths[prev]
        branch = "down" if i > 0 and lv == prev + 1 else "same"
        specs.append(LayerSpec(OP_KIND[op], c_in, planes[lv], widths[lv], branch, lv, rate * i / max(1, n - 1)))
        prev = lv
    return specs


def retrain_plan(ops: list[int], macro: dict[str, Any]) -> list[LayerSpec]:
    """Layers of BossNet's retraining network: stages by level, each stage's stride in its first layer."""
    widths, planes = level_widths(macro)
    strides = [int(s) for s in macro["stage_strides"]]
    rate, n = float(macro["drop_path"]), len(ops)
    specs: list[LayerSpec] = []
    c_prev, idx = int(macro["stem_channels"]), 0
    for stage in range(NUM_LEVELS):
        stage_ops = [op for op in ops if OP_LEVEL[op] == stage]
        branch = "down" if strides[stage] == 2 else "same"
        if not stage_ops:
            specs.append(LayerSpec("transition", c_prev, planes[stage], widths[stage], branch, stage))
            c_prev = widths[stage]
            continue
        for j, op in enumerate(stage_ops):
            specs.append(
                LayerSpec(
                    OP_KIND[op],
                    c_prev,
                    planes[stage],
                    widths[stage],
                    branch if j == 0 else "same",
                    stage,
                    rate * idx / max(1, n - 1),
                )
            )
            c_prev, idx = widths[stage], idx + 1
    return specs


def layer_plan(choices: dict[str, Any], macro: dict[str, Any]) -> list[LayerSpec]:
    """The layers of ``choices`` (``{"blocks": [[op x 4] x 4]}``) under ``macro`` (defaults filled in)."""
    ops = [int(o) for path in choices["blocks"] for o in path]
    if len(ops) != NUM_LAYERS:
        raise ValueError(f"expected {NUM_LAYERS} ops, got {len(ops)}")
    return retrain_plan(ops, macro) if macro["form"] == "retrain" else search_plan(ops, macro)


def make_layer(spec: LayerSpec, inputs: dict[str, int], macro: dict[str, Any]) -> nn.Module:
    """The op of ``spec`` with the input branches ``inputs`` (branch -> input channels)."""
    act = str(macro["activation"])
    shortcut = "resnet_d" if macro["form"] == "retrain" else "search"
    if spec.kind == "transition":
        return conv_bn_act(spec.c_in, spec.c_out, 3, 2 if spec.branch == "down" else 1, act)
    if spec.kind == "att":
        heads, head_dim = attention_heads(spec.planes, int(macro["head_dim"]))
        return ResAtt(inputs, spec.planes, spec.c_out, heads, head_dim, act, shortcut)
    return ResConv(inputs, spec.planes, spec.c_out, act, shortcut, bool(macro["se"]), spec.drop_path)


class HyTraNetwork(nn.Module):
    """stem -> [adapter] -> layers -> global average pool -> dropout -> classifier.

    Module names: ``stem``, ``adapter`` (search form only), ``layers.{i}`` (each op with the one input branch its
    path uses: ``layers.{i}.inputs.{same|down}``), ``classifier``.
    """

    def __init__(self, choices: dict[str, Any], macro: dict[str, Any]) -> None:
        super().__init__()
        m = fill_hytra_macro(macro)
        self.macro = m
        plan = layer_plan(choices, m)
        self.stem = build_stem(m)
        self.adapter: nn.Module | None = None
        if m["form"] != "retrain":
            first = plan[0]
            self.adapter = StemAdapter(int(m["stem_channels"]), first.planes, 2**first.level)
        self.layers = nn.ModuleList(
            [make_layer(s, {s.branch: s.c_in}, m) for s in plan]  # one branch per layer
        )
        self.branches = [s.branch if s.kind != "transition" else "" for s in plan]
        self.dropout = nn.Dropout(float(m["dropout"]))
        self.classifier = nn.Linear(plan[-1].c_out, int(m["num_classes"]))
        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.adapter is not None:
            x = self.adapter(x)
        for layer, branch in zip(self.layers, self.branches, strict=True):
            x = layer(x, branch) if branch else layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))


def build_network(choices: dict[str, Any], macro: dict[str, Any]) -> HyTraNetwork:
    """The standalone network for ``choices`` and a macro dict (defaults filled in for missing keys)."""
    return HyTraNetwork(choices, macro)
