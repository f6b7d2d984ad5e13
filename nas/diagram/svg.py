"""A small, deterministic SVG writer: escaped text, fixed number formatting, presentation attributes only.

No ``<style>`` element and no ``style`` attribute (so a strict Content-Security-Policy never blocks the look of an
inlined diagram) and no scripts. The same input always gives the same bytes. Every node and edge is a ``<g>`` with
a ``<title>`` (the tooltip browsers show on hover) and ``data-*`` attributes that tests and scripts can read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SVG_NS = "http://www.w3.org/2000/svg"
TEST_ID = "arch-diagram"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
FONT_SIZE = 11.0
CHAR_W = 0.62  # average glyph width of FONT in units of the font size (an estimate: no font metrics here)

INK = "#1f2328"
MUTED = "#57606a"
GRID = "#d0d7de"
PAPER = "#ffffff"


def esc(text: object) -> str:
    """Text or an attribute value with &, <, >, " and ' escaped; characters XML 1.0 forbids are dropped."""
    s = str(text)
    s = "".join(ch for ch in s if ch in "\t\n\r" or ord(ch) >= 0x20)
    return (
        s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )


def num(x: float) -> str:
    """A coordinate with at most 1 decimal and no trailing zeros (deterministic, compact)."""
    text = f"{round(float(x), 1):.1f}"
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def text_width(text: str, size: float = FONT_SIZE) -> float:
    return len(text) * size * CHAR_W


def attrs(values: dict[str, object]) -> str:
    """`` k="v"`` pairs in the given order; None values are left out, floats formatted with :func:`num`."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        shown = num(value) if isinstance(value, float) else str(value)
        parts.append(f' {key}="{esc(shown)}"')
    return "".join(parts)


@dataclass
class Svg:
    """An SVG document built element by element; :meth:`render` returns it as a string."""

    width: float
    height: float
    title: str
    description: str = ""
    kind: str = ""
    body: list[str] = field(default_factory=list)

    def add(self, element: str) -> None:
        self.body.append(element)

    def extend(self, elements: Iterable[str]) -> None:
        self.body.extend(elements)

    def render(self) -> str:
        root = attrs(
            {
                "xmlns": SVG_NS,
                "data-testid": TEST_ID,
                "data-kind": self.kind or None,
                "role": "img",
                "aria-label": self.title,
                "width": float(self.width),
                "height": float(self.height),
                "viewBox": f"0 0 {num(self.width)} {num(self.height)}",
                "font-family": FONT,
                "font-size": FONT_SIZE,
            }
        )
        desc = f"<desc>{esc(self.description)}</desc>" if self.description else ""
        background = rect(0, 0, self.width, self.height, fill=PAPER)
        return f"<svg{root}><title>{esc(self.title)}</title>{desc}{background}{''.join(self.body)}</svg>\n"


def rect(x: float, y: float, w: float, h: float, *, rx: float = 0.0, **style: object) -> str:
    values: dict[str, object] = {"x": float(x), "y": float(y), "width": float(w), "height": float(h)}
    if rx:
        values["rx"] = float(rx)
    return f"<rect{attrs({**values, **_style(style)})}/>"


def ellipse(cx: float, cy: float, rx: float, ry: float, **style: object) -> str:
    return f"<ellipse{attrs({'cx': float(cx), 'cy': float(cy), 'rx': float(rx), 'ry': float(ry), **_style(style)})}/>"


def line(x1: float, y1: float, x2: float, y2: float, **style: object) -> str:
    return f"<line{attrs({'x1': float(x1), 'y1': float(y1), 'x2': float(x2), 'y2': float(y2), **_style(style)})}/>"


def path(d: str, **style: object) -> str:
    return f"<path{attrs({'d': d, 'fill': 'none', **_style(style)})}/>"


def text(
    x: float, y: float, content: str, *, anchor: str = "middle", size: float | None = None, **style: object
) -> str:
    values: dict[str, object] = {"x": float(x), "y": float(y), "text-anchor": anchor, "dominant-baseline": "central"}
    if size is not None:
        values["font-size"] = float(size)
    return f"<text{attrs({**values, **_style(style)})}>{esc(content)}</text>"


def group(children: Iterable[str], *, tooltip: str | None = None, **data: object) -> str:
    """A ``<g>`` with a ``<title>`` tooltip first; keyword ``cls`` becomes ``class``, ``data_x`` becomes ``data-x``."""
    values = {_attr_name(k): v for k, v in data.items()}
    head = f"<title>{esc(tooltip)}</title>" if tooltip else ""
    return f"<g{attrs(values)}>{head}{''.join(children)}</g>"


def arrow_marker(marker_id: str, color: str = MUTED) -> str:
    """A ``<defs>`` with an arrowhead marker (reference it with ``marker-end="url(#ID)"``)."""
    head = path("M0,0 L8,4 L0,8 z", fill=color, stroke="none")
    marker = attrs(
        {
            "id": marker_id,
            "viewBox": "0 0 8 8",
            "refX": "7",
            "refY": "4",
            "markerWidth": "7",
            "markerHeight": "7",
            "orient": "auto-start-reverse",
        }
    )
    return f"<defs><marker{marker}>{head}</marker></defs>"


def label_box(x: float, y: float, content: str, *, size: float = 9.5, color: str = INK) -> list[str]:
    """A label centred at (x, y) on a white box, so it stays readable over lines."""
    w = text_width(content, size) + 6
    h = size + 5
    return [
        rect(x - w / 2, y - h / 2, w, h, rx=3.0, fill=PAPER, fill_opacity="0.9", stroke="none"),
        text(x, y, content, size=size, fill=color),
    ]


def _attr_name(key: str) -> str:
    if key == "cls":
        return "class"
    return key.replace("_", "-")


def _style(style: dict[str, object]) -> dict[str, object]:
    return {_attr_name(k): v for k, v in style.items()}
