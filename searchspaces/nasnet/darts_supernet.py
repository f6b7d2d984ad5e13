"""The differentiable (DARTS) supernet of the NASNet cell space (Liu et al., "DARTS: Differentiable Architecture
Search", ICLR 2019).

The DARTS macro (stem, ``layers`` cells with reductions at layers//3 and 2*layers//3, both cell inputs always
preprocessed) is :class:`~searchspaces.nasnet.network.CellNetwork` with ``kind="darts"``; every cell is a
:class:`DartsCell` whose ``nodes`` intermediate nodes each sum a mixed op over every earlier state (edge j -> i,
j < i). A mixed op weights the outputs of all candidate ops plus "none" (zero) by the softmax of the architecture
logits of its edge: ``alpha_normal`` / ``alpha_reduce`` of shape (edges, 1 + ops), shared by all cells of a type.
With DARTS's 4 nodes there are 2 + 3 + 4 + 5 = 14 edges.

The zero op is always candidate 0 of every edge; a space whose ops list ``none`` (the ``darts`` op set: DARTS's 8
PRIMITIVES) gets it there once, so the mixed op holds exactly DARTS's candidates.

``derive()`` keeps, per node, the two incoming edges whose strongest non-zero op has the largest weight, and that op,
giving a genotype in the NASNet encoding (DARTS index convention: 0 = cell k-2, 1 = cell k-1, 2.. = nodes) with every
node concatenated. The encoding has 5 blocks; with fewer nodes the remaining blocks are dead placeholders
``[0, op, 0, op]`` left out of ``concat`` (never built), as in ``genotype.from_darts``.

Differences from the DARTS code: the candidate ops are the space's (BatchNorm with learnable affine parameters, no
extra BatchNorm after pooling), and ``extract`` builds the derived network from scratch (DARTS retrains the derived
network from scratch anyway; no weights are inherited).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.ops.conv import ReLUConvBN, Zero
from nas.supernet import MixedOp, Supernet
from searchspaces.nasnet.cells import CellSpec, make_preprocess, op_stride
from searchspaces.nasnet.genotype import CELL_TYPES, NUM_BLOCKS, NUM_INPUTS, live_blocks
from searchspaces.nasnet.network import CellNetwork
from searchspaces.nasnet.ops import make_op

if TYPE_CHECKING:
    from searchspaces.nasnet.space import NASNetSpace

NONE = "none"


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes: node i reads the 2 inputs and the i earlier nodes."""
    return sum(NUM_INPUTS + i for i in range(nodes))


def edge_offset(node: int) -> int:
    """Index of the first edge into ``node`` (its inputs j = 0 .. node + 1 follow in order)."""
    return num_edges(node)


class _MixingWeights:
    """The softmaxed architecture weights of one forward pass, shared by every cell (a plain holder, not a module)."""

    def __init__(self) -> None:
        self.by_type: dict[str, Tensor] = {}


class DartsCell(nn.Module):
    """A DARTS search cell: preprocess both inputs, ``nodes`` nodes each summing mixed ops over all earlier states,
    output = concatenation of the nodes. Edge order: node 0's inputs 0, 1; node 1's inputs 0, 1, 2; ..."""

    def __init__(self, spec: CellSpec, ops: Sequence[str], nodes: int, weights: _MixingWeights) -> None:
        super().__init__()
        f, cfg = spec.filters, spec.op_config
        self.cell_type = "reduce" if spec.reduction else "normal"
        self.nodes = nodes
        self._weights = weights
        self.pre0 = make_preprocess(spec.pre0, spec.c_prev_prev, f, cfg)
        self.pre1 = ReLUConvBN(spec.c_prev, f, 1, 1, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        channels = spec.input_channels()
        self.edges = nn.ModuleList()
        for node in range(nodes):
            for j in range(NUM_INPUTS + node):
                stride = op_stride(spec, j)
                candidates: dict[str, nn.Module] = {NONE: Zero(f, stride)}
                candidates.update({name: make_op(name, channels[j], f, stride, cfg) for name in ops})
                self.edges.append(MixedOp(candidates))
        self.out_channels = nodes * f

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        w = self._weights.by_type[self.cell_type]
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for _ in range(self.nodes):
            out = self.edges[k](states[0], w[k])
            for j in range(1, len(states)):
                out = out + self.edges[k + j](states[j], w[k + j])
            k += len(states)
            states.append(out)
        return torch.cat(states[NUM_INPUTS:], dim=1)


class DartsSupernet(Supernet):
    """The DARTS search network over the NASNet cell space (see the module docstring).

    ``macro``: the space's macro settings for the search network (``layers``, ``channels``, ``stem``...); ``kind``
    is forced to "darts", the auxiliary head and drop-path are off. ``ops``: candidate ops (default: the space's).
    ``nodes``: intermediate nodes per cell (DARTS: 4; at most 5, the blocks of the encoding).
    """

    mode = "differentiable"

    def __init__(
        self,
        space: NASNetSpace,
        macro: Any = None,
        *,
        ops: Sequence[str] | None = None,
        nodes: int = 4,
        alpha_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if not 1 <= nodes <= NUM_BLOCKS:
            raise InvalidInput("nodes", f"must be 1..{NUM_BLOCKS}, got {nodes}")
        op_names = tuple(ops) if ops is not None else tuple(space.op_names)
        for k, name in enumerate(op_names):
            if name not in space.op_names:
                raise InvalidInput(f"ops[{k}]", f"{name!r} is not an op of the space; allowed: {space.op_names}")
        if len(set(op_names)) != len(op_names):
            raise InvalidInput("ops", "must list at least one op, each once")
        op_names = tuple(o for o in op_names if o != NONE)  # "none" is every edge's built-in zero candidate
        if not op_names:
            raise InvalidInput("ops", "must list at least one op besides 'none'")
        self.space = space
        self.settings = space.macro(macro, kind="darts", aux_head=False, drop_path_keep=1.0)
        self.op_names = op_names
        self.candidate_names = (NONE, *op_names)
        self.nodes = nodes
        self._mixing = _MixingWeights()
        self._fixed: dict[str, Tensor] | None = None
        self.net = CellNetwork(self.settings.model_dump(), lambda spec: DartsCell(spec, op_names, nodes, self._mixing))
        shape = (num_edges(nodes), len(self.candidate_names))
        self.alpha_normal = nn.Parameter(alpha_std * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(alpha_std * torch.randn(shape))

    # --- the relaxation ------------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def alphas(self) -> dict[str, Tensor]:
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(alpha) per cell type, (edges, 1 + ops), column 0 = "none"."""
        return {t: F.softmax(a, dim=-1) for t, a in self.alphas().items()}

    def forward(self, x: Tensor) -> Tensor:
        if self._fixed is not None:
            self._mixing.by_type = {t: w.to(x.device) for t, w in self._fixed.items()}
        else:
            self._mixing.by_type = self.mixing_weights()
        try:
            return self.net(x)  # type: ignore[no-any-return]
        finally:
            self._mixing.by_type = {}

    # --- genotypes -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self) -> Architecture:
        """The discrete architecture of the current alphas (top-2 incoming edges per node, strongest non-zero op)."""
        weights = self.mixing_weights()
        choices = {t: derive_cell(weights[t].detach().cpu(), self.op_names, self.nodes) for t in CELL_TYPES}
        return self.space.make(choices)

    def alphas_summary(self) -> dict[str, Any]:
        """softmax(alpha) as plain lists with the op names of the columns (for events and logs)."""
        return {
            "ops": list(self.candidate_names),
            **{
                t: [[round(float(v), 5) for v in row] for row in w.detach().cpu()]
                for t, w in self.mixing_weights().items()
            },
        }

    # --- paths ---------------------------------------------------------------------------------------------
    def set_active(self, arch: Architecture) -> None:
        """Run the discrete ``arch`` inside the supernet: fixed weights 1 on its (edge, op) pairs, 0 elsewhere,
        until :meth:`clear_active`. Only architectures DARTS can express are accepted: the first ``nodes`` blocks
        live and concatenated, the others dead, ops among the supernet's."""
        self.space.validate(arch)
        fixed = {}
        for t in CELL_TYPES:
            fixed[t] = self._one_hot(arch.choices[t], f"architecture.choices.{t}")
        self._fixed = fixed

    def clear_active(self) -> None:
        """Back to the softmax relaxation."""
        self._fixed = None

    def _one_hot(self, cell: dict[str, Any], where: str) -> Tensor:
        concat = [int(j) for j in cell["concat"]]
        if concat != list(range(NUM_INPUTS, NUM_INPUTS + self.nodes)):
            raise InvalidInput(f"{where}.concat", f"the DARTS supernet concatenates all {self.nodes} nodes")
        live = live_blocks(cell["blocks"], concat)
        if any(live[self.nodes :]):
            raise InvalidInput(f"{where}.blocks", f"only the first {self.nodes} blocks may be live")
        w = torch.zeros(num_edges(self.nodes), len(self.candidate_names))
        for b in range(self.nodes):
            i1, o1, i2, o2 = cell["blocks"][b]
            for k, (j, op) in enumerate(((int(i1), o1), (int(i2), o2))):
                if op not in self.op_names:
                    raise InvalidInput(f"{where}.blocks[{b}][{2 * k + 1}]", f"{op!r} is not an op of this supernet")
                w[edge_offset(b) + j, self.candidate_names.index(op)] += 1.0
        return w

    def extract(self, arch: Architecture) -> nn.Module:
        """The standalone network of ``arch`` with the search network's macro, freshly initialised: DARTS retrains
        the derived architecture from scratch, so no weights are inherited."""
        return self.space.build(arch, self.settings)


def derive_cell(weights: Tensor, op_names: Sequence[str], nodes: int) -> dict[str, Any]:
    """One cell's genotype from its mixing weights (edges, 1 + ops), column 0 being "none".

    Per node: each incoming edge's strength is the weight of its strongest non-zero op; the two strongest edges are
    kept (ties: the lower input index), listed by input index. All nodes are concatenated; blocks past ``nodes`` are
    dead placeholders.
    """
    blocks: list[list[Any]] = []
    for node in range(nodes):
        ranked = []
        for j in range(NUM_INPUTS + node):
            row = weights[edge_offset(node) + j, 1:]
            best = int(row.argmax())
            ranked.append((-float(row[best]), j, op_names[best]))
        top = sorted(sorted(ranked)[:2], key=lambda r: r[1])
        blocks.append([top[0][1], top[0][2], top[1][1], top[1][2]])
    while len(blocks) < NUM_BLOCKS:
        blocks.append([0, op_names[0], 0, op_names[0]])
    return {"blocks": blocks, "concat": list(range(NUM_INPUTS, NUM_INPUTS + nodes))}
