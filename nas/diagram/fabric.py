"""A path on a multi-resolution fabric (HyTra): blocks x layers across resolution levels.

Columns are layers (grouped into blocks), rows are resolution levels (highest resolution on top). The path starts at
the stem, visits one node per layer and ends at the head; a step down one row is a stride-2 down-sampling, drawn in
its own colour and labelled. Convolution and attention layers have different shapes and colours. The grey dots are
the fabric: every (layer, level) position.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nas.diagram import svg
from nas.diagram.svg import GRID, INK, MUTED, PAPER

COL_W = 58.0
ROW_H = 54.0
LEFT = 78.0  # level labels
TOP = 58.0  # block labels
NODE_W = 44.0
NODE_H = 24.0
LEGEND_H = 40.0

KIND_STYLE = {
    "conv": {"fill": "#ddf4ff", "stroke": "#0969da"},
    "att": {"fill": "#fff1e5", "stroke": "#bc4c00"},
}
PATH_COLOR = "#0969da"
DOWN_COLOR = "#cf222e"
BAND_FILLS = ("#f6f8fa", "#ffffff")

Coord = Callable[[int], float]


@dataclass(frozen=True)
class FabricLayer:
    """One layer of the path: in ``block``, position ``layer`` within it, running ``op`` at ``level``.

    ``kind`` is 'conv' or 'att' (shape and colour), ``label`` the short text in the node, ``detail`` the tooltip.
    """

    block: int
    layer: int
    level: int
    kind: str
    label: str
    detail: str


def draw_fabric(
    layers: Sequence[FabricLayer],
    *,
    level_names: Sequence[str],
    num_blocks: int,
    layers_per_block: int,
    kind_names: dict[str, str],
    title: str,
    description: str = "",
    stem_level: int = 0,
) -> str:
    """The path through the fabric as one SVG document."""
    columns = num_blocks * layers_per_block
    width = LEFT + (columns + 2) * COL_W + 20
    height = TOP + len(level_names) * ROW_H + LEGEND_H + 10

    def cx(column: int) -> float:  # column -1: the stem, `columns`: the head
        return LEFT + (column + 1) * COL_W + COL_W / 2

    def cy(level: int) -> float:
        return TOP + level * ROW_H + ROW_H / 2

    body: list[str] = [svg.arrow_marker("arrow", PATH_COLOR), svg.arrow_marker("arrow-down", DOWN_COLOR)]
    body.extend(_bands(num_blocks, layers_per_block, len(level_names), cx))
    body.extend(_levels(level_names, cy))
    body.extend(_grid(columns, len(level_names), cx, cy))

    # the path: stem -> layers -> head, one edge per step
    points = [(-1, stem_level, "stem")] + [(i, lay.level, f"L{i}") for i, lay in enumerate(layers)]
    points.append((columns, layers[-1].level if layers else stem_level, "head"))
    edges: list[str] = []
    for (c1, l1, n1), (c2, l2, n2) in itertools.pairwise(points):
        edges.append(_edge(c1, l1, n1, c2, l2, n2, level_names, cx, cy))
    body.extend(edges)

    body.append(_terminal(cx(-1), cy(stem_level), "stem", f"stem: output at {level_names[stem_level]}", "stem"))
    for i, lay in enumerate(layers):
        body.append(_layer_node(i, lay, cx(i), cy(lay.level), level_names))
    head_level = layers[-1].level if layers else stem_level
    body.append(_terminal(cx(columns), cy(head_level), "head", "classifier head (global pooling, linear)", "head"))
    body.extend(_legend(kind_names, height - LEGEND_H / 2 - 4))

    doc = svg.Svg(width=width, height=height, title=title, description=description, kind="fabric")
    doc.extend(body)
    return doc.render()


def _bands(num_blocks: int, per_block: int, levels: int, cx: Coord) -> list[str]:
    out = []
    for b in range(num_blocks):
        x = LEFT + (b * per_block + 1) * COL_W
        w = per_block * COL_W
        out.append(
            svg.group(
                [
                    svg.rect(x, TOP - 28, w, levels * ROW_H + 28, fill=BAND_FILLS[b % 2], stroke=GRID),
                    svg.text(x + w / 2, TOP - 14, f"block {b + 1}", fill=INK, font_weight="bold"),
                ],
                tooltip=f"block {b + 1}: layers {b * per_block + 1}-{(b + 1) * per_block}",
                cls="block",
                data_block=b,
            )
        )
    return out


def _levels(names: Sequence[str], cy: Coord) -> list[str]:
    out = []
    for level, name in enumerate(names):
        y = cy(level)
        out.append(
            svg.group(
                [svg.text(10, y, name, anchor="start", fill=MUTED)],
                tooltip=f"resolution level {level}: {name}" + (" (after the stem)" if level == 0 else ""),
                cls="level",
                data_level=level,
            )
        )
    return out


def _grid(columns: int, levels: int, cx: Coord, cy: Coord) -> list[str]:
    out = []
    for c in range(columns):
        for level in range(levels):
            out.append(svg.ellipse(cx(c), cy(level), 2.5, 2.5, fill=GRID, stroke="none"))
    return out


def _edge(c1: int, l1: int, n1: str, c2: int, l2: int, n2: str, names: Sequence[str], cx: Coord, cy: Coord) -> str:
    x1, y1 = cx(c1) + NODE_W / 2, cy(l1)
    x2, y2 = cx(c2) - NODE_W / 2, cy(l2)
    down = l2 > l1
    color = DOWN_COLOR if down else PATH_COLOR
    d = f"M{svg.num(x1)},{svg.num(y1)} L{svg.num(x2)},{svg.num(y2)}"
    children = [
        svg.path(
            d, stroke=color, stroke_width=2.2 if down else 1.8, marker_end="url(#arrow-down)" if down else "url(#arrow)"
        )
    ]
    tip = f"{n1} -> {n2} at {names[l2]}"
    if down:
        steps = l2 - l1
        tip = f"{n1} -> {n2}: down-sampling {names[l1]} -> {names[l2]} (stride {2**steps})"
        children += svg.label_box((x1 + x2) / 2, (y1 + y2) / 2, f"/{2**steps}", color=DOWN_COLOR)
    return svg.group(
        children,
        tooltip=tip,
        cls="edge downsample" if down else "edge",
        data_from=n1,
        data_to=n2,
        data_downsample=str(down).lower(),
    )


def _layer_node(i: int, lay: FabricLayer, x: float, y: float, names: Sequence[str]) -> str:
    style = KIND_STYLE.get(lay.kind, KIND_STYLE["conv"])
    if lay.kind == "att":
        shape = svg.ellipse(x, y, NODE_W / 2, NODE_H / 2 + 2, stroke_width=1.5, **style)
    else:
        shape = svg.rect(x - NODE_W / 2, y - NODE_H / 2, NODE_W, NODE_H, rx=3.0, stroke_width=1.5, **style)
    tip = f"block {lay.block + 1}, layer {lay.layer + 1}: {lay.detail} at {names[lay.level]}"
    return svg.group(
        [shape, svg.text(x, y, lay.label, size=10.0, fill=INK)],
        tooltip=tip,
        cls=f"node layer {lay.kind}",
        data_node=f"L{i}",
        data_block=lay.block,
        data_layer=lay.layer,
        data_level=lay.level,
        data_kind=lay.kind,
    )


def _terminal(x: float, y: float, label: str, tip: str, name: str) -> str:
    return svg.group(
        [
            svg.rect(x - NODE_W / 2, y - NODE_H / 2, NODE_W, NODE_H, rx=12.0, fill=PAPER, stroke=INK),
            svg.text(x, y, label, size=10.0, fill=INK),
        ],
        tooltip=tip,
        cls=f"node {name}",
        data_node=name,
    )


def _legend(kind_names: dict[str, str], y: float) -> list[str]:
    out: list[str] = []
    x = LEFT
    for kind, name in kind_names.items():
        style = KIND_STYLE.get(kind, KIND_STYLE["conv"])
        if kind == "att":
            out.append(svg.ellipse(x + 14, y, 14, 9, **style))
        else:
            out.append(svg.rect(x, y - 8, 28, 16, rx=3.0, **style))
        out.append(svg.text(x + 36, y, name, anchor="start", fill=INK))
        x += 44 + svg.text_width(name) + 20
    out.append(svg.line(x, y, x + 30, y, stroke=DOWN_COLOR, stroke_width=2.2))
    out.append(svg.text(x + 38, y, "down-sampling (stride 2)", anchor="start", fill=INK))
    return [svg.group(out, tooltip="legend", cls="legend")]
