"""NASNet-family networks (NASNet, PNASNet and DARTS macro-architectures) built from a cell factory.

:class:`CellNetwork` owns the stem, the sequence of cells, the auxiliary head and the classifier; it asks a
``make_cell(spec)`` callable for every cell, so the standalone network, the single-path supernet and a DARTS
supernet share the same macro code. :func:`build_network` is the standalone entry point (plain dicts, no pydantic).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.conv import batch_norm
from nas.ops.drop import ScheduledDropPath
from searchspaces.nasnet.cells import Cell, CellSpec
from searchspaces.nasnet.ops import OpConfig

MACRO_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 3,
    "kind": "nasnet",
    "stem": "cifar",
    "cells_per_stack": 2,
    "filters": 16,
    "stem_multiplier": 3.0,
    "skip_reduction_layer_input": False,
    "layers": 8,
    "channels": 16,
    "drop_path_keep": 1.0,
    "dropout": 0.0,
    "aux_head": False,
    "image_size": 32,
    "bn_eps": 1e-3,
    "bn_momentum": 0.1,
    "attention_heads": 2,
}


def fill_macro(macro: dict[str, Any] | None) -> dict[str, Any]:
    """The macro dict with defaults for missing (or None) entries."""
    out = dict(MACRO_DEFAULTS)
    out.update({k: v for k, v in (macro or {}).items() if v is not None})
    return out


@dataclass(frozen=True)
class CellStep:
    """One cell of the macro-architecture: reduction or not, its filter count, whether it is an ImageNet stem cell."""

    reduction: bool
    filters: int
    stem: bool = False


def cell_sequence(macro: dict[str, Any]) -> list[CellStep]:
    """The cells in order.

    - nasnet: [2 stem reduction cells with F/4, F/2 (ImageNet stem)] + 3 stacks of N normal cells, with a
      reduction cell (not counted in N) before stacks 2 and 3; filters double at each reduction.
    - pnasnet: [2 stem cells] + 3N cells, the cells at N and 2N being reduction cells (TF ``calc_reduction_layers``).
    - darts: ``layers`` cells, reductions at ``layers // 3`` and ``2 * layers // 3``.
    """
    m = macro
    kind = m["kind"]
    steps: list[CellStep] = []
    if kind in ("nasnet", "pnasnet") and m["stem"] == "imagenet":
        f = int(m["filters"])
        steps += [CellStep(True, int(f * 0.25), True), CellStep(True, int(f * 0.5), True)]
    if kind == "nasnet":
        f, n = int(m["filters"]), int(m["cells_per_stack"])
        for stack in range(3):
            if stack > 0:
                f *= 2
                steps.append(CellStep(True, f))
            steps += [CellStep(False, f)] * n
        return steps
    if kind == "pnasnet":
        f, total = int(m["filters"]), 3 * int(m["cells_per_stack"])
    elif kind == "darts":
        f, total = int(m["channels"]), int(m["layers"])
    else:
        raise ValueError(f"unknown macro kind {kind!r}; allowed: nasnet, pnasnet, darts")
    reductions = {int(total * k / 3) for k in (1, 2)} if kind == "pnasnet" else {total // 3, 2 * total // 3}
    for i in range(total):
        if i in reductions:
            f *= 2
        steps.append(CellStep(i in reductions, f))
    return steps


def build_stems(macro: dict[str, Any]) -> tuple[list[nn.Module], list[tuple[int, int, int]]]:
    """The stem modules (applied in sequence, each output kept) and their output (channels, level, size).

    ``level`` counts stride-2 steps from the input; ``size`` is the side at ``macro["image_size"]``.
    """
    m = macro
    eps, mom, c_in, s = float(m["bn_eps"]), float(m["bn_momentum"]), int(m["in_channels"]), int(m["image_size"])
    sm = float(m["stem_multiplier"])
    if m["kind"] == "darts":
        c = int(m["channels"])
        if m["stem"] == "cifar":
            cs = int(sm * c)
            return [nn.Sequential(nn.Conv2d(c_in, cs, 3, 1, 1, bias=False), batch_norm(cs, eps, mom))], [(cs, 0, s)]
        stem0 = nn.Sequential(
            nn.Conv2d(c_in, c // 2, 3, 2, 1, bias=False),
            batch_norm(c // 2, eps, mom),
            nn.ReLU(),
            nn.Conv2d(c // 2, c, 3, 2, 1, bias=False),
            batch_norm(c, eps, mom),
        )
        stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1, bias=False), batch_norm(c, eps, mom))
        s0 = math.ceil(math.ceil(s / 2) / 2)
        return [stem0, stem1], [(c, 2, s0), (c, 3, math.ceil(s0 / 2))]
    if m["stem"] == "cifar":
        cs = int(sm * int(m["filters"]))
        return [nn.Sequential(nn.Conv2d(c_in, cs, 3, 1, 1, bias=False), batch_norm(cs, eps, mom))], [(cs, 0, s)]
    cs = int(32 * sm)  # ImageNet stem: 3x3 conv, stride 2, VALID padding
    stem = nn.Sequential(nn.Conv2d(c_in, cs, 3, 2, 0, bias=False), batch_norm(cs, eps, mom))
    return [stem], [(cs, 1, (s - 3) // 2 + 1)]


class AuxHead(nn.Module):
    """Auxiliary classifier (NASNet/DARTS): ReLU -> avg pool 5x5 stride 3 (valid) -> 1x1 conv 128 -> BN -> ReLU ->
    conv 768 with kernel = remaining spatial size -> BN -> ReLU -> linear.

    The kernel is computed for ``feature_size`` (the side at the macro's ``image_size``); at other input sizes the
    map is average-pooled to that kernel first (a no-op at the design size), and maps smaller than 5 skip the pool.
    """

    def __init__(self, c_in: int, num_classes: int, feature_size: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.kernel = (feature_size - 5) // 3 + 1 if feature_size >= 5 else max(1, feature_size)
        self.conv1 = nn.Conv2d(c_in, 128, 1, bias=False)
        self.bn1 = batch_norm(128, bn_eps, bn_momentum)
        self.conv2 = nn.Conv2d(128, 768, self.kernel, bias=False)
        self.bn2 = batch_norm(768, bn_eps, bn_momentum)
        self.classifier = nn.Linear(768, num_classes)

    def first_conv(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if x.shape[-2] >= 5 and x.shape[-1] >= 5:
            x = F.avg_pool2d(x, 5, 3)
        x = F.relu(self.bn1(self.first_conv(x)))
        if x.shape[-2] != self.kernel or x.shape[-1] != self.kernel:
            x = F.adaptive_avg_pool2d(x, self.kernel)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.flatten(1))


CellFactory = Callable[[CellSpec], nn.Module]
HeadFactory = Callable[[int, int], nn.Module]
AuxFactory = Callable[[int, int, int, float, float], nn.Module]


def _default_classifier(c_in: int, num_classes: int) -> nn.Module:
    return nn.Linear(c_in, num_classes)


class CellNetwork(nn.Module):
    """Stem -> cells -> [ReLU] -> global average pool -> dropout -> linear, plus an optional auxiliary head.

    ``make_cell(spec)`` builds each cell; the returned module must have ``out_channels`` and ``forward(s0, s1)``
    where s0 is the output of cell k-2 (or of the stem) and s1 that of cell k-1. In training mode with
    ``aux_head`` the forward returns ``(logits, aux_logits)``, else the logits. Module names: ``stems``,
    ``cells``, ``aux``, ``classifier``.
    """

    def __init__(
        self,
        macro: dict[str, Any],
        make_cell: CellFactory,
        make_classifier: HeadFactory | None = None,
        make_aux: AuxFactory | None = None,
    ) -> None:
        super().__init__()
        m = fill_macro(macro)
        self.macro = m
        kind = m["kind"]
        darts = kind == "darts"
        self.op_config = OpConfig(
            float(m["bn_eps"]), float(m["bn_momentum"]), "factorized" if darts else "conv", int(m["attention_heads"])
        )
        stems, shapes = build_stems(m)
        self.stems = nn.ModuleList(stems)
        steps = cell_sequence(m)
        self.specs: list[CellSpec] = []
        self._prev_prev: list[int] = []  # index into the kept outputs, -1: none (read input 1 instead)
        cells: list[nn.Module] = []
        skip_reduction_input = bool(m["skip_reduction_layer_input"]) and kind == "nasnet"
        for i, step in enumerate(steps):
            prev = len(shapes) - 1
            pp = prev - 1 if prev >= 1 else -1
            after_reduction = i > 0 and steps[i - 1].reduction and not steps[i - 1].stem
            if skip_reduction_input and not step.reduction and after_reduction:
                pp = prev - 2  # TF skip_reduction_layer_input: the output from before the previous normal cell
            c_prev, level, size = shapes[prev]
            if pp < 0:
                c_pp = c_prev
                mode = "conv" if darts else "raw"
            else:
                c_pp, level_pp, _ = shapes[pp]
                if level_pp != level:
                    if level_pp != level - 1:
                        raise ValueError(f"cell {i}: input 0 is {level - level_pp} reductions away from input 1")
                    mode = "factorized"
                elif darts or c_pp != step.filters:
                    mode = "conv"
                else:
                    mode = "identity"
            spec = CellSpec(
                index=i,
                total_cells=len(steps),
                reduction=step.reduction,
                filters=step.filters,
                c_prev_prev=c_pp,
                c_prev=c_prev,
                pre0=mode,
                kind=kind,
                drop_path_keep=float(m["drop_path_keep"]),
                op_config=self.op_config,
                stem=step.stem,
            )
            cell = make_cell(spec)
            cells.append(cell)
            self.specs.append(spec)
            self._prev_prev.append(pp)
            if step.reduction:
                level, size = level + 1, math.ceil(size / 2)
            shapes.append((int(cell.out_channels), level, size))
        self.cells = nn.ModuleList(cells)
        n_stems = len(stems)
        # free each kept output after its last reader (eval memory); the last output is never freed
        last_use: dict[int, int] = {}
        for i, pp in enumerate(self._prev_prev):
            last_use[n_stems + i - 1] = i
            if pp >= 0:
                last_use[pp] = max(last_use.get(pp, -1), i)
        self._free_after: list[list[int]] = [[] for _ in steps]
        for k, i in last_use.items():
            if k != len(shapes) - 1:
                self._free_after[i].append(k)
        reductions = [i for i, s in enumerate(steps) if s.reduction and not s.stem]
        self.aux_index = -1
        self.aux: nn.Module | None = None
        if m["aux_head"] and len(reductions) >= 2:
            self.aux_index = reductions[1] if darts else reductions[1] - 1
            c_aux, _, size_aux = shapes[n_stems + self.aux_index]
            factory: AuxFactory = make_aux or AuxHead
            self.aux = factory(c_aux, int(m["num_classes"]), size_aux, float(m["bn_eps"]), float(m["bn_momentum"]))
        self.head_relu = not darts  # DARTS pools the last cell's output directly
        self.dropout = nn.Dropout(float(m["dropout"]))
        self.classifier = (make_classifier or _default_classifier)(shapes[-1][0], int(m["num_classes"]))

    def set_progress(self, fraction: float) -> None:
        """Fraction of training done (0..1), for ScheduledDropPath; the trainer calls it every step."""
        for module in self.modules():
            if isinstance(module, ScheduledDropPath):
                module.progress = float(fraction)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        outs: list[Tensor | None] = []
        for stem in self.stems:
            x = stem(x)
            outs.append(x)
        aux: Tensor | None = None
        for i, cell in enumerate(self.cells):
            h = outs[-1]
            pp = self._prev_prev[i]
            p = h if pp < 0 else outs[pp]
            assert h is not None and p is not None
            y = cell(p, h)
            outs.append(y)
            for k in self._free_after[i]:
                outs[k] = None
            if i == self.aux_index and self.aux is not None and self.training:
                aux = self.aux(y)
        x = outs[-1]
        assert x is not None
        if self.head_relu:
            x = F.relu(x)
        logits = self.classifier(self.dropout(x.mean((2, 3))))
        if aux is not None:
            return logits, aux
        return logits


def build_network(choices: dict[str, Any], macro: dict[str, Any]) -> CellNetwork:
    """The standalone network for ``choices`` (``{"normal": cell, "reduce": cell}``) and a macro dict."""

    def make_cell(spec: CellSpec) -> nn.Module:
        return Cell(spec, choices["reduce" if spec.reduction else "normal"])

    return CellNetwork(macro, make_cell)
