"""Cells as graphs (NASNet, PNASNet, DARTS cells): two inputs, blocks that add two op outputs, the concat.

A cell's states are numbered as in the NASNet/DARTS encodings: 0 and 1 are the cell's inputs (the outputs of cells
k-2 and k-1), 2.. the outputs of blocks 0... Each block reads two states through one op each (the op labels the
edge) and adds the results; the cell's output concatenates the states listed in ``concat``. Several cells (normal
and reduction) are drawn side by side. Blocks that do not reach the output are drawn dashed (they are not built).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nas.diagram import svg
from nas.diagram.svg import GRID, INK, MUTED, PAPER

COL_W = 220.0  # distance between columns (room for an op label on every edge)
ROW_H = 64.0
NODE_W = 70.0
NODE_H = 30.0
PANEL_GAP = 36.0
HEADER_H = 34.0
MARGIN = 18.0

INPUT_FILL = "#ddf4ff"
BLOCK_FILL = "#fff8c5"
CONCAT_FILL = "#dafbe1"
DEAD_FILL = "#f6f8fa"
EDGE = "#0969da"
SLOT_DY = 8.0  # where an op edge meets its block: above (slot 0) or below (slot 1) the middle
LABEL_SIZE = 9.5
STRAIGHT = 88.0  # the level last stretch of an op edge, where its label sits


@dataclass(frozen=True)
class CellBlock:
    """One block: ``ops[i]`` applied to state ``inputs[i]``, the two results added."""

    inputs: tuple[int, int]
    ops: tuple[str, str]


@dataclass(frozen=True)
class Cell:
    """One cell to draw. ``live[b]`` says whether block b reaches the output (None: all do)."""

    name: str
    title: str
    blocks: Sequence[CellBlock]
    concat: Sequence[int]
    live: Sequence[bool] | None = None
    input_names: tuple[str, str] = ("c[k-2]", "c[k-1]")


def state_name(cell: Cell, state: int) -> str:
    return cell.input_names[state] if state < 2 else f"block {state - 1}"


def _depths(cell: Cell) -> list[int]:
    depth = [0, 0]
    for block in cell.blocks:
        depth.append(1 + max(depth[i] if 0 <= i < len(depth) else 0 for i in block.inputs))
    return depth


def _layout(cell: Cell) -> tuple[dict[int, tuple[float, float]], int, int]:
    """Centre (x, y) of every state relative to the panel's top left, the number of columns and of rows."""
    depth = _depths(cell)
    columns: dict[int, list[int]] = {}
    for state, d in enumerate(depth):
        columns.setdefault(d, []).append(state)
    rows = max(len(states) for states in columns.values())
    rows = max(rows, 2)
    pos: dict[int, tuple[float, float]] = {}
    for d, states in columns.items():
        top = (rows - len(states)) * ROW_H / 2
        for r, state in enumerate(states):
            pos[state] = (MARGIN + NODE_W / 2 + d * COL_W, HEADER_H + top + r * ROW_H + ROW_H / 2)
    return pos, max(columns) + 2, rows


def _panel(cell: Cell, x0: float) -> tuple[list[str], float, float]:
    pos, ncols, rows = _layout(cell)
    live = list(cell.live) if cell.live is not None else [True] * len(cell.blocks)
    width = 2 * MARGIN + NODE_W + (ncols - 1) * COL_W
    height = HEADER_H + rows * ROW_H + MARGIN
    concat_xy = (MARGIN + NODE_W / 2 + (ncols - 1) * COL_W, HEADER_H + rows * ROW_H / 2)
    out: list[str] = [
        svg.rect(x0 + 0.5, 0.5, width - 1, height - 1, rx=8.0, fill=PAPER, stroke=GRID),
        svg.text(x0 + MARGIN, HEADER_H / 2 + 2, cell.title, anchor="start", size=13.0, fill=INK, font_weight="bold"),
    ]
    edges: list[str] = []
    # op edges: from each block's two input states into the block
    for b, block in enumerate(cell.blocks):
        target = 2 + b
        for slot, (src, op) in enumerate(zip(block.inputs, block.ops, strict=True)):
            edges.append(_op_edge(cell, x0, pos, src, target, op, slot, live[b]))
    # concat edges
    for state in cell.concat:
        if state not in pos:
            continue
        (x1, y1), (x2, y2) = pos[state], concat_xy
        d = _curve(x0 + x1 + NODE_W / 2, y1, x0 + x2 - NODE_W / 2, y2)
        edges.append(
            svg.group(
                [svg.path(d, stroke=MUTED, stroke_width=1.2, stroke_dasharray="4 3", marker_end="url(#arrow)")],
                tooltip=f"{cell.name}: {state_name(cell, state)} goes into the concat (the cell's output)",
                cls="edge concat",
                data_cell=cell.name,
                data_from=state,
                data_to="concat",
                data_op="concat",
            )
        )
    nodes: list[str] = []
    for state, (x, y) in sorted(pos.items()):
        nodes.append(_node(cell, x0 + x, y, state, live[state - 2] if state >= 2 else True))
    cx, cy = concat_xy
    concat_tip = f"{cell.name}: concat of " + ", ".join(state_name(cell, s) for s in cell.concat) + " = c[k]"
    nodes.append(
        svg.group(
            [
                svg.rect(x0 + cx - NODE_W / 2, cy - NODE_H / 2, NODE_W, NODE_H, rx=4.0, fill=CONCAT_FILL, stroke=INK),
                svg.text(x0 + cx, cy, "concat", fill=INK),
            ],
            tooltip=concat_tip,
            cls="node concat",
            data_cell=cell.name,
            data_node="concat",
        )
    )
    return out + edges + nodes, width, height


def _node(cell: Cell, x: float, y: float, state: int, live: bool) -> str:
    if state < 2:
        shape = svg.ellipse(x, y, NODE_W / 2, NODE_H / 2, fill=INPUT_FILL, stroke=INK)
        tip = f"{cell.name}: input {state_name(cell, state)} (output of cell k-{2 - state})"
        return svg.group(
            [shape, svg.text(x, y, state_name(cell, state), fill=INK)],
            tooltip=tip,
            cls="node input",
            data_cell=cell.name,
            data_node=state,
        )
    block = cell.blocks[state - 2]
    terms = " + ".join(f"{op}({state_name(cell, i)})" for i, op in zip(block.inputs, block.ops, strict=True))
    tip = f"{cell.name}: {state_name(cell, state)} = {terms}"
    if not live:
        tip += " (unused: it does not reach the cell's output, so it is not built)"
    shape = svg.rect(
        x - NODE_W / 2,
        y - NODE_H / 2,
        NODE_W,
        NODE_H,
        rx=4.0,
        fill=BLOCK_FILL if live else DEAD_FILL,
        stroke=INK if live else MUTED,
        stroke_dasharray=None if live else "4 3",
    )
    return svg.group(
        [shape, svg.text(x, y, f"{state_name(cell, state)} +", fill=INK if live else MUTED)],
        tooltip=tip,
        cls="node block" if live else "node block dead",
        data_cell=cell.name,
        data_node=state,
        data_live=str(live).lower(),
    )


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    """A horizontal S-curve; its last stretch (where the op label sits) runs level into the target."""
    bend_end = x2 - STRAIGHT
    dx = max((bend_end - x1) / 2, 10.0)
    n = svg.num
    return f"M{n(x1)},{n(y1)} C{n(x1 + dx)},{n(y1)} {n(bend_end - dx)},{n(y2)} {n(bend_end)},{n(y2)} L{n(x2)},{n(y2)}"


def _op_edge(
    cell: Cell,
    x0: float,
    pos: dict[int, tuple[float, float]],
    src: int,
    target: int,
    op: str,
    slot: int,
    live: bool,
) -> str:
    """An op edge; it ends on the upper (slot 0) or lower (slot 1) half of the block, its label just before that
    end, so the labels of one block never overlap and each sits on its own edge."""
    (x1, y1), (x2, y2) = pos[src], pos[target]
    sx, tx = x0 + x1 + NODE_W / 2, x0 + x2 - NODE_W / 2
    sy, ty = y1 + (-3.0 if slot == 0 else 3.0), y2 + (-SLOT_DY if slot == 0 else SLOT_DY)
    color = EDGE if live else MUTED
    label_w = svg.text_width(op, LABEL_SIZE) + 6
    return svg.group(
        [
            svg.path(_curve(sx, sy, tx, ty), stroke=color, stroke_width=1.4, marker_end="url(#arrow)"),
            *svg.label_box(tx - 10 - label_w / 2, ty, op, size=LABEL_SIZE, color=INK if live else MUTED),
        ],
        tooltip=f"{cell.name}: {op} on {state_name(cell, src)} into {state_name(cell, target)}",
        cls="edge op",
        data_cell=cell.name,
        data_from=src,
        data_to=target,
        data_op=op,
        data_slot=slot,
    )


def draw_cells(cells: Sequence[Cell], *, title: str, description: str = "", kind: str = "cell") -> str:
    """The cells side by side in one SVG document."""
    body: list[str] = [svg.arrow_marker("arrow")]
    x = 0.0
    height = 0.0
    for cell in cells:
        elements, w, h = _panel(cell, x)
        body.append(svg.group(elements, cls="cell", data_cell=cell.name))
        x += w + PANEL_GAP
        height = max(height, h)
    doc = svg.Svg(width=max(x - PANEL_GAP, 1.0), height=height, title=title, description=description, kind=kind)
    doc.extend(body)
    return doc.render()
