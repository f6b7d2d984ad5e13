"""A chain of layers grouped into stages (MBConv networks): one column per stage, its layers top to bottom.

Searched layers are coloured by their op (``tone``); fixed layers (stem, tail, head) are white. Layers with stride 2
carry a "/2" mark. Edges follow the data: down a stage, then to the top of the next one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from nas.diagram import svg
from nas.diagram.svg import GRID, INK, MUTED, PAPER

COL_W = 118.0
ROW_H = 46.0
NODE_W = 92.0
NODE_H = 28.0
TOP = 52.0
MARGIN = 16.0
LEGEND_H = 34.0

TONES = ("#ddf4ff", "#dafbe1", "#fff8c5", "#ffebe9", "#fbefff", "#fff1e5")
EDGE = "#57606a"
DOWN_COLOR = "#cf222e"


@dataclass(frozen=True)
class ChainLayer:
    """One layer: ``label`` in the node, ``detail`` as tooltip, ``op`` (data-op), ``tone`` its colour (None: fixed)."""

    label: str
    detail: str
    op: str
    stride: int = 1
    tone: int | None = None


@dataclass(frozen=True)
class ChainStage:
    name: str
    title: str
    layers: Sequence[ChainLayer]
    searched: bool = True


def draw_chain(
    stages: Sequence[ChainStage], *, title: str, legend: Sequence[tuple[int, str]] = (), description: str = ""
) -> str:
    """The stages side by side, layers chained, as one SVG document. ``legend``: (tone, op name) pairs."""
    rows = max((len(st.layers) for st in stages), default=1)
    width = 2 * MARGIN + len(stages) * COL_W
    height = TOP + rows * ROW_H + LEGEND_H + 12
    body: list[str] = [svg.arrow_marker("arrow", EDGE)]
    positions: list[tuple[float, float, str]] = []  # every layer in order: centre and node id
    nodes: list[str] = []
    for s, stage in enumerate(stages):
        x = MARGIN + s * COL_W + COL_W / 2
        band = [
            svg.rect(
                x - COL_W / 2 + 4,
                8,
                COL_W - 8,
                TOP - 12 + rows * ROW_H,
                rx=6.0,
                fill="#f6f8fa" if stage.searched else PAPER,
                stroke=GRID,
            ),
            svg.text(x, 22, stage.title, size=10.5, fill=INK, font_weight="bold"),
        ]
        body.append(svg.group(band, tooltip=_stage_tip(stage), cls="stage", data_stage=stage.name))
        for j, layer in enumerate(stage.layers):
            y = TOP + j * ROW_H + ROW_H / 2
            node_id = f"{stage.name}.{j}"
            positions.append((x, y, node_id))
            nodes.append(_node(stage, j, layer, x, y, node_id))
    edges = []
    for (x1, y1, a), (x2, y2, b) in itertools.pairwise(positions):
        if x1 == x2:
            d = f"M{svg.num(x1)},{svg.num(y1 + NODE_H / 2)} L{svg.num(x2)},{svg.num(y2 - NODE_H / 2)}"
        else:
            sx, sy, tx, ty = x1 + NODE_W / 2, y1, x2 - NODE_W / 2, y2
            mx = (sx + tx) / 2
            n = svg.num
            d = f"M{n(sx)},{n(sy)} C{n(mx)},{n(sy)} {n(mx)},{n(ty)} {n(tx)},{n(ty)}"
        edges.append(
            svg.group(
                [svg.path(d, stroke=EDGE, stroke_width=1.4, marker_end="url(#arrow)")],
                tooltip=f"{a} -> {b}",
                cls="edge",
                data_from=a,
                data_to=b,
            )
        )
    body.extend(edges)
    body.extend(nodes)
    body.append(_legend(legend, height - LEGEND_H / 2 - 4))
    doc = svg.Svg(width=width, height=height, title=title, description=description, kind="chain")
    doc.extend(body)
    return doc.render()


def _stage_tip(stage: ChainStage) -> str:
    kind = "searched" if stage.searched else "fixed"
    return f"{stage.title}: {len(stage.layers)} layer{'s' * (len(stage.layers) != 1)} ({kind})"


def _node(stage: ChainStage, j: int, layer: ChainLayer, x: float, y: float, node_id: str) -> str:
    fill = TONES[layer.tone % len(TONES)] if layer.tone is not None else PAPER
    children = [
        svg.rect(
            x - NODE_W / 2,
            y - NODE_H / 2,
            NODE_W,
            NODE_H,
            rx=4.0,
            fill=fill,
            stroke=INK if layer.tone is not None else MUTED,
        ),
        svg.text(x, y, layer.label, size=10.0, fill=INK),
    ]
    if layer.stride > 1:
        children += svg.label_box(x + NODE_W / 2 - 2, y - NODE_H / 2, f"/{layer.stride}", size=8.5, color=DOWN_COLOR)
    tip = f"{stage.title}, layer {j + 1}: {layer.detail}" + (f", stride {layer.stride}" if layer.stride > 1 else "")
    return svg.group(
        children,
        tooltip=tip,
        cls="node layer" if layer.tone is not None else "node fixed",
        data_node=node_id,
        data_stage=stage.name,
        data_op=layer.op,
        data_stride=layer.stride,
    )


def _legend(items: Sequence[tuple[int, str]], y: float) -> str:
    out: list[str] = []
    x = MARGIN
    for tone, name in items:
        out.append(svg.rect(x, y - 8, 24, 16, rx=3.0, fill=TONES[tone % len(TONES)], stroke=INK))
        out.append(svg.text(x + 30, y, name, anchor="start", size=10.0, fill=INK))
        x += 40 + svg.text_width(name, 10.0)
    return svg.group(out, tooltip="legend", cls="legend")
