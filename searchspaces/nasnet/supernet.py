"""Single-path weight-sharing supernet of the NASNet cell space (SPOS / ENAS style).

Sharing scheme: every (cell, block, input slot, candidate input, op) has its own op weights (spec section 7), so a
path's ops are exactly the standalone network's. A cell's output is the concatenation of its active concat set,
like the standalone cell; the modules that read a cell output (the next cells' input adjustments, the auxiliary
head and the classifier) hold weights for the widest possible output (all 7 states) and use the input-channel
columns of the active states. :meth:`NASNetSupernet.extract` copies those columns, so the extracted network
computes the same function as the supernet with that path active. Only the active ops run.

Training from a sampled wiring (docs/nasnet.md, "Why the single-path supernet learns"): with the default random
initialisation every candidate (input, op) is an independent random projection, so a state's channels mean something
else on every sampled path and the shared readers of a cell output get gradients that cancel; the supernet then stays
at chance. Two changes fix this without changing any path's network (``options.supernet``):

- ``init: identity``: every conv of a candidate op starts as the identity on channels (:mod:`nas.ops.init`) and
  every reader of a cell output starts with the same weights for each state's columns, so all paths start from one
  feature code.
- ``head_norm``: the classifier normalises its pooled input per channel (a BatchNorm without affine parameters, with
  running statistics per column of the widest layout). Identity and pooling chains make a cell output's scale
  depend on the path by up to 2^5; without it the logits of some paths explode. :meth:`NASNetSupernet.extract`
  folds the running statistics into the standalone classifier's weight and bias, which is exact in eval mode.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.conv import FactorizedReduce, ReLUConvBN
from nas.ops.init import identity_init_
from nas.supernet import Supernet, fitting, inherit_weights
from searchspaces.nasnet.cells import (
    CellSpec,
    applies_drop_path,
    make_concat_reducers,
    make_drop_path,
    make_preprocess,
    op_stride,
)
from searchspaces.nasnet.genotype import NUM_BLOCKS, NUM_INPUTS, NUM_STATES, live_blocks
from searchspaces.nasnet.network import AuxHead, CellNetwork
from searchspaces.nasnet.ops import make_op

if TYPE_CHECKING:
    from nas.arch import Architecture
    from searchspaces.nasnet.space import NASNetMacro, NASNetSpace


def _columns(concat: list[int], filters: int) -> list[int]:
    """Input columns, in a 7-state-wide layout, of a cell output holding the states ``concat``."""
    return [j * filters + c for j in concat for c in range(filters)]


@torch.no_grad()
def _repeat_state_columns(weight: Tensor, filters: int) -> None:
    """Copy the input columns of the first state (``filters`` wide) over those of every other state."""
    states = weight.shape[1] // filters
    for j in range(1, states):
        weight[:, j * filters : (j + 1) * filters] = weight[:, :filters]


class _Columns:
    """A column selection with a per-device tensor cache."""

    def __init__(self, cols: list[int]) -> None:
        self.cols = cols
        self._cache: dict[torch.device, Tensor] = {}

    def on(self, device: torch.device) -> Tensor:
        t = self._cache.get(device)
        if t is None:
            t = self._cache[device] = torch.tensor(self.cols, dtype=torch.long, device=device)
        return t


class SlicedLinear(nn.Linear):
    """A linear layer for the widest input; reads the columns set in ``cols`` (all when None)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out)
        self.cols: _Columns | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.cols is None:
            return super().forward(x)
        return F.linear(x, self.weight.index_select(1, self.cols.on(x.device)), self.bias)


class SlicedBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d without affine parameters over the widest input whose forward normalises the columns ``index``
    with their own running statistics (and updates only those), following ``momentum`` like BatchNorm (None: the
    cumulative average used by BatchNorm recalibration)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False)

    def forward_sliced(self, x: Tensor, index: Tensor | None) -> Tensor:
        if index is None:
            return super().forward(x)
        training = self.training and x.shape[0] > 1
        factor = 0.0
        if training:
            tracked = self.num_batches_tracked
            assert tracked is not None
            tracked.add_(1)
            factor = 1.0 / float(tracked) if self.momentum is None else float(self.momentum)
        mean = self.running_mean.index_select(0, index)  # type: ignore[union-attr]
        var = self.running_var.index_select(0, index)  # type: ignore[union-attr]
        out = F.batch_norm(x, mean, var, None, None, training, factor, self.eps)
        if training:
            self.running_mean.index_copy_(0, index, mean)  # type: ignore[union-attr]
            self.running_var.index_copy_(0, index, var)  # type: ignore[union-attr]
        return out

    @torch.no_grad()
    def fold(self, weight: Tensor, bias: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(weight', bias')`` of a linear layer computing ``linear(norm(x), weight, bias)`` in eval mode."""
        mean, var = self.running_mean, self.running_var
        assert mean is not None and var is not None
        if index is not None:
            mean, var = mean.index_select(0, index), var.index_select(0, index)
        scale = (var + self.eps).rsqrt()
        return weight * scale, bias - weight @ (mean * scale)


class NormedSlicedLinear(SlicedLinear):
    """:class:`SlicedLinear` reading its input through a :class:`SlicedBatchNorm1d` (``options.supernet.head_norm``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out)
        self.norm = SlicedBatchNorm1d(c_in)

    def index(self, device: torch.device) -> Tensor | None:
        return self.cols.on(device) if self.cols is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.norm.forward_sliced(x, self.index(x.device)))


class SlicedAuxHead(AuxHead):
    """The auxiliary head whose first 1x1 conv reads the columns set in ``cols``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.cols: _Columns | None = None

    def first_conv(self, x: Tensor) -> Tensor:
        if self.cols is None:
            return self.conv1(x)
        return F.conv2d(x, self.conv1.weight.index_select(1, self.cols.on(x.device)))


class SuperCell(nn.Module):
    """All candidate ops of one cell: ``choices["{block}_{slot}"]["{input}"]["{op}"]``."""

    def __init__(self, spec: CellSpec, op_names: tuple[str, ...]) -> None:
        super().__init__()
        self.spec = spec
        f, cfg = spec.filters, spec.op_config
        self.pre0 = make_preprocess(spec.pre0, spec.c_prev_prev, f, cfg)
        self.pre1 = ReLUConvBN(spec.c_prev, f, 1, 1, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        channels = spec.input_channels()
        self.choices = nn.ModuleDict()
        for b in range(NUM_BLOCKS):
            for s in range(2):
                self.choices[f"{b}_{s}"] = nn.ModuleDict(
                    {
                        str(j): nn.ModuleDict(
                            {o: make_op(o, channels[j], f, op_stride(spec, j), cfg) for o in op_names}
                        )
                        for j in range(NUM_INPUTS + b)
                    }
                )
        self.concat_reduce = make_concat_reducers(spec, list(range(NUM_INPUTS)))
        self.drop_path = make_drop_path(spec)
        self.out_channels = NUM_STATES * f  # widest output; the active one is len(concat) * f
        self.concat: list[int] = []
        self._blocks: list[tuple[int, int, str, int, str, bool, bool]] = []
        self.cols0: _Columns | None = None
        self.cols1: _Columns | None = None
        self.pre0_identity = False

    def activate(self, genotype: dict[str, Any], cols0: list[int] | None, cols1: list[int] | None) -> None:
        """Route through ``genotype``; ``cols0``/``cols1`` are the columns of the inputs (None: fixed width)."""
        blocks = genotype["blocks"]
        self.concat = [int(j) for j in genotype["concat"]]
        self._blocks = []
        for b, (alive, (i1, o1, i2, o2)) in enumerate(zip(live_blocks(blocks, self.concat), blocks, strict=True)):
            if alive:
                d1 = applies_drop_path(self.spec, o1, self.choices[f"{b}_0"][str(i1)][o1])
                d2 = applies_drop_path(self.spec, o2, self.choices[f"{b}_1"][str(i2)][o2])
                self._blocks.append((b, int(i1), o1, int(i2), o2, d1, d2))
        self.cols0 = _Columns(cols0) if cols0 is not None else None
        self.cols1 = _Columns(cols1) if cols1 is not None else None
        # the standalone network skips the 1x1 adjustment of input 0 when it already has F channels (NASNet rule)
        self.pre0_identity = (
            self.spec.kind != "darts"
            and self.spec.pre0 == "conv"
            and cols0 is not None
            and len(cols0) == self.spec.filters
        )

    def _pre(self, module: nn.Module, x: Tensor, cols: _Columns | None) -> Tensor:
        if cols is None or isinstance(module, nn.Identity):
            return module(x)  # type: ignore[no-any-return]
        return module.forward_sliced(x, cols.on(x.device))  # type: ignore[operator,no-any-return]

    def _branch(self, b: int, s: int, i: int, op: str, x: Tensor, drop: bool) -> Tensor:
        y = self.choices[f"{b}_{s}"][str(i)][op](x)
        if drop and self.drop_path is not None:
            y = self.drop_path(y)
        return y  # type: ignore[no-any-return]

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        p = s0 if self.pre0_identity else self._pre(self.pre0, s0, self.cols0)
        states: list[Tensor | None] = [p, self._pre(self.pre1, s1, self.cols1)]
        states += [None] * (NUM_STATES - NUM_INPUTS)
        for b, i1, o1, i2, o2, d1, d2 in self._blocks:
            x1, x2 = states[i1], states[i2]
            assert x1 is not None and x2 is not None
            states[NUM_INPUTS + b] = self._branch(b, 0, i1, o1, x1, d1) + self._branch(b, 1, i2, o2, x2, d2)
        outs: list[Tensor] = []
        for j in self.concat:
            x = states[j]
            assert x is not None
            key = str(j)
            outs.append(self.concat_reduce[key](x) if key in self.concat_reduce else x)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class NASNetSupernet(Supernet):
    """Single-path supernet over a NASNet macro; ``forward`` follows the path set by :meth:`set_active`."""

    mode = "single_path"

    def __init__(self, space: NASNetSpace, macro: NASNetMacro) -> None:
        super().__init__()
        self.space = space
        self.macro = macro
        op_names = space.op_names
        settings = space.options.supernet
        self.head_norm = settings.head_norm
        self.net = CellNetwork(
            macro.model_dump(),
            lambda spec: SuperCell(spec, op_names),
            make_classifier=NormedSlicedLinear if settings.head_norm else SlicedLinear,
            make_aux=SlicedAuxHead,
        )
        if settings.init == "identity":
            self._identity_init()
        self.active: Architecture | None = None
        self.set_active(space.sample(random.Random(0)))

    @torch.no_grad()
    def _identity_init(self) -> None:
        """``options.supernet.init = identity``: candidate ops start as the identity on channels, and every reader
        of a cell output (all states wide) starts with one weight block repeated for every state."""
        for cell in self.net.cells:
            assert isinstance(cell, SuperCell)
            identity_init_(cell.choices)
            identity_init_(cell.concat_reduce)
        for name, filters in self._readers().items():
            module = self.net.get_submodule(name)
            weights: list[Tensor]
            if isinstance(module, FactorizedReduce):
                weights = [module.conv1.weight, module.conv2.weight]
            elif isinstance(module, nn.Linear):
                weights = [module.weight]
            elif isinstance(module, AuxHead):
                weights = [module.conv1.weight]
            else:
                assert isinstance(module, ReLUConvBN)
                weights = [module.conv.weight]
            for w in weights:
                _repeat_state_columns(w, filters)

    def _readers(self) -> dict[str, int]:
        """The modules that read a cell output (module name in ``self.net``), with that cell's filters."""
        n_stems, specs = len(self.net.stems), self.net.specs
        readers: dict[str, int] = {}

        def add(name: str, output: int) -> None:
            cell = output - n_stems
            if output >= 0 and cell >= 0:
                readers[name] = specs[cell].filters

        for i, cell in enumerate(self.net.cells):
            add(f"cells.{i}.pre1", n_stems + i - 1)
            pp = self.net._prev_prev[i]
            if pp >= 0 and not isinstance(cell.pre0, nn.Identity):
                add(f"cells.{i}.pre0", pp)
        add("classifier", n_stems + len(specs) - 1)
        if self.net.aux is not None:
            add("aux", n_stems + self.net.aux_index)
        return readers

    # --- routing -----------------------------------------------------------------------------------------------
    def _layout(self, arch: Architecture) -> dict[str, list[int] | None]:
        """Columns read by every consumer of a cell output ("cells.i.pre0", "cells.i.pre1", "aux", "classifier")."""
        n_stems = len(self.net.stems)
        specs = self.net.specs

        def cols_of(output: int) -> list[int] | None:
            cell = output - n_stems
            if output < 0 or cell < 0:
                return None  # a stem output or the raw input: fixed width
            genotype = arch.choices["reduce" if specs[cell].reduction else "normal"]
            return _columns(genotype["concat"], specs[cell].filters)

        layout: dict[str, list[int] | None] = {}
        for i in range(len(specs)):
            pp = self.net._prev_prev[i]
            layout[f"cells.{i}.pre1"] = cols_of(n_stems + i - 1)
            layout[f"cells.{i}.pre0"] = cols_of(pp) if pp >= 0 else None
        layout["classifier"] = cols_of(n_stems + len(specs) - 1)
        layout["aux"] = cols_of(n_stems + self.net.aux_index) if self.net.aux is not None else None
        return layout

    def set_active(self, arch: Architecture) -> None:
        self.space.validate(arch)
        layout = self._layout(arch)
        for i, (cell, spec) in enumerate(zip(self.net.cells, self.net.specs, strict=True)):
            genotype = arch.choices["reduce" if spec.reduction else "normal"]
            cell.activate(genotype, layout[f"cells.{i}.pre0"], layout[f"cells.{i}.pre1"])  # type: ignore[operator]
        classifier_cols = layout["classifier"]
        self.net.classifier.cols = _Columns(classifier_cols) if classifier_cols is not None else None
        if self.net.aux is not None:
            aux_cols = layout["aux"]
            self.net.aux.cols = _Columns(aux_cols) if aux_cols is not None else None
        self.active = arch

    def set_progress(self, fraction: float) -> None:
        self.net.set_progress(fraction)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.net(x)  # type: ignore[no-any-return]

    # --- extraction --------------------------------------------------------------------------------------------
    def _source_key(self, key: str, arch: Architecture) -> tuple[str, str | None]:
        """The supernet key holding standalone ``key``, and the consumer whose columns to take (or None)."""
        parts = key.split(".")
        if parts[0] == "cells" and parts[2] == "ops":
            i, (b, s) = int(parts[1]), (int(v) for v in parts[3].split("_"))
            genotype = arch.choices["reduce" if self.net.specs[i].reduction else "normal"]
            block = genotype["blocks"][b]
            j, op = block[2 * s], block[2 * s + 1]
            return ".".join(["cells", parts[1], "choices", parts[3], str(j), op, *parts[4:]]), None
        if parts[0] == "cells" and parts[2] in ("pre0", "pre1"):
            return key, ".".join(parts[:3])
        if parts[0] in ("aux", "classifier"):
            return key, parts[0]
        return key, None

    @torch.no_grad()
    def extract(self, arch: Architecture) -> nn.Module:
        """``space.build(arch, macro)`` carrying this supernet's weights for the path ``arch``."""
        net = self.space.build(arch, self.macro)
        layout = self._layout(arch)
        source = self.net.state_dict()
        folded: dict[str, Tensor] = {}
        classifier = self.net.classifier
        if isinstance(classifier, NormedSlicedLinear):  # head_norm: fold the normalisation into the classifier
            cols = layout["classifier"]
            index = None if cols is None else torch.tensor(cols, dtype=torch.long, device=classifier.weight.device)
            weight = classifier.weight if index is None else classifier.weight.index_select(1, index)
            folded["classifier.weight"], folded["classifier.bias"] = classifier.norm.fold(
                weight, classifier.bias, index
            )

        def tensor_for(key: str, target: Tensor) -> Tensor:
            if key in folded:
                return fitting(folded, key, key, target)
            skey, consumer = self._source_key(key, arch)
            tensor = source[skey]
            cols = layout.get(consumer) if consumer is not None else None
            if tensor.shape != target.shape and cols is not None and tensor.dim() >= 2:
                # a layer reading a cell output holds weights for the widest concat set: keep this path's columns
                tensor = tensor.index_select(1, torch.tensor(cols, dtype=torch.long, device=tensor.device))
            return fitting({skey: tensor}, skey, key, target)

        return inherit_weights(net, self, tensor_for)
