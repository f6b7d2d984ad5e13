"""Architecture diagrams (nas.diagram and the spaces' ``diagram``): valid XML, nodes and edges that match the
architecture, a tooltip on every node and edge, deterministic output."""

from __future__ import annotations

import itertools
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from nas.arch import Architecture
from nas.diagram import Diagram, draw, svg
from nas.diagram.cell import Cell, CellBlock, draw_cells
from nas.errors import InvalidInput
from nas.space import get_space, space_names
from searchspaces.hytra.encoding import OP_KIND, OP_LEVEL, OP_NAMES
from searchspaces.mbconv.encoding import MBCONV_OP_NAMES, MBCONV_STAGES
from searchspaces.nasnet.genotype import live_blocks

NS = "{http://www.w3.org/2000/svg}"


def parse(document: str) -> ET.Element:
    root = ET.fromstring(document)
    assert root.tag == f"{NS}svg"
    assert root.get("data-testid") == "arch-diagram"
    assert root.find(f"{NS}title") is not None and root.find(f"{NS}title").text  # type: ignore[union-attr]
    return root


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    """The <g> elements whose class list holds ``cls``."""
    return [g for g in root.iter(f"{NS}g") if cls in (g.get("class") or "").split()]


def tooltip(g: ET.Element) -> str:
    first = g.find(f"{NS}title")
    assert first is not None and first.text, ET.tostring(g)
    return first.text


def every_node_and_edge_has_a_tooltip(root: ET.Element) -> None:
    for g in groups(root, "node") + groups(root, "edge"):
        tooltip(g)


def sample(space_name: str, seed: int) -> tuple[Any, Architecture]:
    space = get_space(space_name)
    return space, space.sample(random.Random(seed))


def test_spaces_provide_diagrams_through_the_protocol() -> None:
    """NASNet, HyTra and MBConv draw theirs; any other registered space that implements the protocol (FBNetV5 once
    it does) is checked the same way."""
    for name in ("nasnet", "hytra", "bossnas-mbconv"):
        assert isinstance(get_space(name), Diagram), name
    for name in space_names():
        space = get_space(name)
        if isinstance(space, Diagram):
            root = parse(draw(space, space.sample(random.Random(0))))
            every_node_and_edge_has_a_tooltip(root)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nasnet_cells_nodes_and_edges_match_the_architecture(seed: int) -> None:
    space, arch = sample("nasnet", seed)
    root = parse(space.diagram(arch))
    assert root.get("data-kind") == "nasnet-cells"
    every_node_and_edge_has_a_tooltip(root)
    for cell in ("normal", "reduce"):
        choices = arch.choices[cell]
        nodes = {g.get("data-node"): g for g in groups(root, "node") if g.get("data-cell") == cell}
        # two inputs, five blocks, the concat
        assert set(nodes) == {"0", "1", "2", "3", "4", "5", "6", "concat"}
        assert [g.get("data-node") for g in groups(root, "input") if g.get("data-cell") == cell] == ["0", "1"]
        live = live_blocks(choices["blocks"], choices["concat"])
        for b, is_live in enumerate(live):
            assert nodes[str(2 + b)].get("data-live") == str(is_live).lower()
        # one op-labelled edge per (block, input slot), from the input state it reads
        edges = [g for g in groups(root, "op") if g.get("data-cell") == cell]
        got = sorted((int(g.get("data-to", "")), int(g.get("data-slot", "")), int(g.get("data-from", "")),
                      g.get("data-op")) for g in edges)  # fmt: skip
        want = sorted(
            (2 + b, slot, int(block[2 * slot]), block[2 * slot + 1])
            for b, block in enumerate(choices["blocks"])
            for slot in (0, 1)
        )
        assert got == want
        for g in edges:  # the op is written on the edge
            assert g.get("data-op") in [t.text for t in g.iter(f"{NS}text")]
        concat = sorted(int(g.get("data-from", "")) for g in groups(root, "concat") if g.tag == f"{NS}g"
                        and g.get("data-cell") == cell and "edge" in (g.get("class") or ""))  # fmt: skip
        assert concat == sorted(choices["concat"])


def test_nasnet_preset_and_attention_op() -> None:
    space = get_space("nasnet", attention=True)
    arch = space.preset("nasnet-a-cifar").arch
    root = parse(draw(space, arch))
    assert {g.get("data-op") for g in groups(root, "op")} >= {"sep_conv_5x5", "avg_pool_3x3"}
    # a block of two same-input ops keeps both edges apart (two slots)
    blocks = arch.choices["normal"]["blocks"]
    choices = {**arch.choices, "normal": {"blocks": [[1, "self_attention", 1, "skip_connect"], *blocks[1:]],
                                          "concat": arch.choices["normal"]["concat"]}}  # fmt: skip
    attn = Architecture(space="nasnet", version="1", choices=choices)
    root = parse(draw(space, attn))
    slots = [(g.get("data-slot"), g.get("data-op")) for g in groups(root, "op")
             if g.get("data-cell") == "normal" and g.get("data-to") == "2"]  # fmt: skip
    assert sorted(slots) == [("0", "self_attention"), ("1", "skip_connect")]


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_hytra_path_on_the_fabric(seed: int) -> None:
    space, arch = sample("hytra", seed)
    root = parse(space.diagram(arch))
    assert root.get("data-kind") == "fabric"
    every_node_and_edge_has_a_tooltip(root)
    layers = [g for g in groups(root, "layer")]
    ops = [int(op) for path in arch.choices["blocks"] for op in path]
    assert len(layers) == 16
    for i, (g, op) in enumerate(zip(layers, ops, strict=True)):
        assert g.get("data-node") == f"L{i}"
        assert (int(g.get("data-block", "")), int(g.get("data-layer", ""))) == divmod(i, 4)
        assert int(g.get("data-level", "")) == OP_LEVEL[op]
        assert g.get("data-kind") == OP_KIND[op]  # ResConv and ResAtt told apart ...
        shape = "ellipse" if OP_KIND[op] == "att" else "rect"  # ... by shape too
        assert g.find(f"{NS}{shape}") is not None
        assert OP_NAMES[op] in tooltip(g)
    # stem -> 16 layers -> head; every step down a level is a marked down-sampling edge
    edges = groups(root, "edge")
    assert [e.get("data-from") for e in edges] == ["stem", *(f"L{i}" for i in range(16))]
    levels = [0, *(OP_LEVEL[o] for o in ops)]
    downs = [i for i in range(16) if levels[i + 1] > levels[i]]
    assert [i for i, e in enumerate(edges) if e.get("data-downsample") == "true"] == downs
    for i in downs:
        assert "down-sampling" in tooltip(edges[i]) and "/2" in [t.text for t in edges[i].iter(f"{NS}text")]
    assert len(groups(root, "block")) == 4


def test_mbconv_chain() -> None:
    space, arch = sample("bossnas-mbconv", 3)
    root = parse(space.diagram(arch))
    assert root.get("data-kind") == "chain"
    every_node_and_edge_has_a_tooltip(root)
    searched = groups(root, "layer")
    ops = [int(op) for path in arch.choices["blocks"] for op in path]
    assert [int(g.get("data-op", "")) for g in searched] == ops
    stages = [g.get("data-stage") for g in searched]
    assert stages == [f"stage{k + 1}" for k, (_, _, n) in enumerate(MBCONV_STAGES) for _ in range(n)]
    for g, op in zip(searched, ops, strict=True):
        assert MBCONV_OP_NAMES[op] in tooltip(g)
    strides = [int(g.get("data-stride", "")) for g in searched]
    assert strides == [s if j == 0 else 1 for _, s, n in MBCONV_STAGES for j in range(n)]
    nodes = [g.get("data-node") for g in groups(root, "node")]
    edges = [(e.get("data-from"), e.get("data-to")) for e in groups(root, "edge")]
    assert edges == list(itertools.pairwise(nodes))  # one chain, in order


def test_output_is_deterministic_and_escaped() -> None:
    space, arch = sample("nasnet", 7)
    assert space.diagram(arch) == space.diagram(Architecture.model_validate(arch.model_dump()))
    cell = Cell("normal", 'a <cell> & "quotes"', [CellBlock((0, 1), ("op<1>", "op&2"))] * 1, concat=[2])
    root = parse(draw_cells([cell], title="t & <t>"))
    assert {g.get("data-op") for g in groups(root, "op")} == {"op<1>", "op&2"}
    assert svg.esc("x\x00y\x1f<") == "xy&lt;"
    assert (svg.num(1.0), svg.num(2.25), svg.num(-0.04), svg.num(10)) == ("1", "2.2", "0", "10")


def test_invalid_architectures_are_refused_naming_the_field() -> None:
    space = get_space("nasnet")
    bad = Architecture(space="nasnet", version="1", choices={"normal": {}, "reduce": {}})
    with pytest.raises(InvalidInput) as e:
        draw(space, bad)
    assert e.value.field.startswith("architecture.choices")
    other = Architecture(space="hytra", version="1", choices={"blocks": []})
    with pytest.raises(InvalidInput) as e:
        draw(space, other)
    assert e.value.field == "architecture.space"
    toy = get_space("toyconv")
    with pytest.raises(InvalidInput, match="does not draw"):
        draw(toy, toy.sample(random.Random(0)))
