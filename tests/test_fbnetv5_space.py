"""The FBNetV5 space: FBNetV3-A's IRF blocks, masks over an HRNet-like supernet, task heads, the FBNetV3-A preset
against its published costs, exact extraction, validation, `nas info` and export."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.export import export_model
from nas.measure import count_costs, count_params
from nas.ops.attention import TransformerBlock2d
from nas.ops.mbconv import IRF
from nas.space import get_space
from searchspaces.fbnetv5 import FBNetV5Space
from searchspaces.fbnetv5.encoding import FBNETV3A_PATHS, FBNETV3A_STEM_BLOCKS, fusion_edges
from searchspaces.fbnetv5.network import FBNetV5Network, Resample
from searchspaces.fbnetv5.presets import PUBLISHED
from searchspaces.fbnetv5.supernet import FBNetV5Supernet

TASKS = ["classification", "segmentation", "detection"]
TINY_OPTIONS: dict[str, Any] = {"depth_mult": 0.2, "extra_blocks": 1, "hybrid": True}
TINY = {
    "width_mult": 0.25,
    "stem_stride": 1,
    "num_classes": 5,
    "head_channels": 32,
    "seg_channels": 16,
    "det_channels": 16,
    "attn_heads": 2,
}
SIDE = 32
SPACE = FBNetV5Space(**TINY_OPTIONS)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
_NET: dict[str, FBNetV5Supernet] = {}


def expected_shapes(task: str, n: int = 2) -> tuple[int, ...]:
    classes = TINY["num_classes"]
    if task == "classification":
        return (n, classes)
    if task == "segmentation":
        return (n, classes + 1, SIDE, SIDE)  # class 0 = background, upsampled to the input
    return (n, classes + 4, SIDE // 4, SIDE // 4)  # the H/8 path (stem stride 1: side / 4)


def supernet() -> FBNetV5Supernet:
    """A tiny multi-task hybrid supernet with random weights and BN statistics (so equalities are not trivial: the
    zero-initialised last BN gammas would make every residual block the identity)."""
    if "net" not in _NET:
        torch.manual_seed(0)
        net = SPACE.supernet({**TINY, "tasks": TASKS})
        assert isinstance(net, FBNetV5Supernet)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        _NET["net"] = net.eval()
    return _NET["net"]


# ----------------------------------------------------------------------------------------------------- the blocks
def test_irf_block_follows_fbnetv3() -> None:
    block = IRF(40, 40, 5, 1, 3.0, se=True)
    assert block.has_residual and torch.all(block.body.bn3.weight == 0)  # starts as the identity
    assert block.body.conv_pw is not None and block.body.conv_pw.out_channels == 120
    assert isinstance(block.body.act1, nn.Hardswish) and isinstance(block.body.act2, nn.Hardswish)
    assert block.body.se is not None and block.body.se.hard  # hard-sigmoid gate
    assert block.body.se.reduce.out_channels == 16  # less_se_channels: make_divisible(120 * 0.25 / 3) = 16
    x = torch.randn(2, 40, 8, 8)
    assert torch.equal(block.eval()(x), x)
    unit = IRF(16, 16, 3, 1, 1.0)
    assert unit.body.conv_pw is None and unit.body.se is None  # e1: no 1x1 expansion
    down = IRF(24, 40, 5, 2, 5.0, se=True)
    assert not down.has_residual and down(torch.randn(1, 24, 8, 8)).shape == (1, 40, 4, 4)


def test_transformer_block_keeps_the_shape_and_starts_as_identity() -> None:
    block = TransformerBlock2d(16, heads=4).eval()
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.attn.bn.weight.fill_(1.0)
    assert block(x).shape == x.shape and not torch.equal(block(x), x)


# ----------------------------------------------------------------------------------------------------- the preset
def test_fbnetv3_a_preset_matches_the_published_costs() -> None:
    space = get_space("fbnetv5")
    preset = space.preset("fbnetv3-a")
    macro = space.macro(preset.macro)
    costs = count_costs(lambda: space.build(preset.arch, macro), (1, 3, preset.input_size, preset.input_size))
    published = PUBLISHED["fbnetv3-a"]
    assert costs["params"] == pytest.approx(published["params"], rel=0.02)
    assert costs["macs"] == pytest.approx(published["macs"], rel=0.02)


def test_fbnetv3_a_preset_keeps_exactly_fbnetv3_a_blocks() -> None:
    space = get_space("fbnetv5")
    preset = space.preset("fbnetv3-a")
    with torch.device("meta"):
        net = space.build(preset.arch, preset.macro)
    assert isinstance(net, FBNetV5Network)
    assert not any(isinstance(m, Resample) for m in net.modules())  # no fusion: a single path
    got = [
        (m.body.conv_dw.kernel_size[0], m.body.conv_dw.stride[0], m.body.conv_pwl.out_channels, m.body.se is not None)
        for m in [*list(net.stem)[1:], *net.blocks.values()]
    ]
    want = [
        (k, s if i == 0 else 1, c, se)
        for k, _, se, c, s, n, *_ in [*FBNETV3A_STEM_BLOCKS, *[g for path in FBNETV3A_PATHS for g in path]]
        for i in range(n)
    ]
    assert got == want
    assert list(net.heads) == ["classification"] and net.head_inputs == {"classification": [3]}
    out = space.build(preset.arch, {**preset.macro, "num_classes": 7}).eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_presets_need_fbnetv3_depths_and_droppable_fusion() -> None:
    assert "fbnetv3-a" in FBNetV5Space(stages=5, extra_blocks=3).presets()
    assert FBNetV5Space(depth_mult=0.5).presets() == {}
    assert FBNetV5Space(search_fusion=False).presets() == {}


# ------------------------------------------------------------------------------------------- sampled architectures
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_every_sampled_mask_builds_and_runs_every_head(seed: int) -> None:
    arch = SPACE.sample(random.Random(seed))
    SPACE.validate(arch)
    x = torch.randn(2, 3, SIDE, SIDE)
    for task in TASKS:
        out = SPACE.build(arch, {**TINY, "tasks": [task]}).eval()(x)
        assert out.shape == expected_shapes(task)
    outs = SPACE.build(arch, {**TINY, "tasks": TASKS}).eval()(x)
    assert [tuple(o.shape) for o in outs] == [expected_shapes(t) for t in TASKS]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_extraction_equals_the_supernet_path(seed: int) -> None:
    net = supernet()
    arch = SPACE.sample(random.Random(seed))
    net.set_active(arch)
    sub = net.extract(arch)
    assert not sub.training
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed % 1000))
    with torch.no_grad():
        want, got = net(x), sub(x)
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert count_params(sub) < count_params(net)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, rate=st.floats(0.0, 1.0))
def test_mutation_and_crossover_stay_in_the_space(seed: int, rate: float) -> None:
    rng = random.Random(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    child = SPACE.mutate(a, rng, rate)
    assert child.hash != a.hash
    mixed = SPACE.crossover(a, b, rng)
    for pos in SPACE.positions():
        assert SPACE._get(mixed.choices, pos) in (SPACE._get(a.choices, pos), SPACE._get(b.choices, pos))


def test_sampling_draws_every_value_of_every_mask() -> None:
    rng = random.Random(0)
    seen: dict[tuple, set[int]] = {pos: set() for pos in SPACE.positions()}
    for _ in range(60):
        arch = SPACE.sample(rng)
        for pos in seen:
            seen[pos].add(SPACE._get(arch.choices, pos))
    assert all(seen[pos] == set(SPACE.values(pos)) for pos in seen)
    assert any(len(v) == 3 for v in seen.values())  # hybrid: transformer blocks at H/16 and H/32


def test_skipped_blocks_and_unread_paths_are_not_built() -> None:
    space = FBNetV5Space()
    full = json.loads(json.dumps(space._filled(1, 1)))
    macro = {"num_classes": 10}
    everything = count_costs(lambda: space.build(space.make(full), macro), (1, 3, 64, 64))
    only_h4 = count_costs(lambda: space.build(space.make(full), {**macro, "cls_paths": [0]}), (1, 3, 64, 64))
    none = count_costs(lambda: space.build(space.make(space._filled(0, 1)), macro), (1, 3, 64, 64))
    assert none["params"] < everything["params"] and only_h4["params"] < everything["params"]


def test_fusion_edges_can_be_fixed() -> None:
    space = FBNetV5Space(search_fusion=False, **TINY_OPTIONS)
    arch = space.sample(random.Random(1))
    assert all(all(e == 1 for e in edges) for edges in arch.choices["fusion"])
    assert space.log10_size() < SPACE.log10_size()
    bad = json.loads(json.dumps(arch.choices))
    bad["fusion"][2][0] = 0
    with pytest.raises(InvalidInput) as info:
        space.validate(Architecture(space="fbnetv5", version="1", choices=bad))
    assert info.value.field == "architecture.choices.fusion[2][0]" and "search_fusion" in info.value.message


# ---------------------------------------------------------------------------------------------------- bad input
def _choices(edit: Any) -> dict[str, Any]:
    choices = json.loads(json.dumps(SPACE.sample(random.Random(0)).choices))
    edit(choices)
    return choices


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda c: c.pop("fusion"), "architecture.choices", "keys"),
        (lambda c: c["blocks"].pop(), "architecture.choices.blocks", "4 stages"),
        (lambda c: c["blocks"][1].pop(), "architecture.choices.blocks[1]", "2 paths"),
        (lambda c: c["blocks"][3][0].append(1), "architecture.choices.blocks[3][0]", "1 block masks"),
        (lambda c: c["blocks"][0][0].__setitem__(0, 2), "architecture.choices.blocks[0][0][0]", "hybrid"),
        (lambda c: c["blocks"][3][3].__setitem__(0, 3), "architecture.choices.blocks[3][3][0]", "[0, 1, 2]"),
        (lambda c: c["blocks"][2][1].__setitem__(0, True), "architecture.choices.blocks[2][1][0]", "allowed"),
        (lambda c: c["fusion"].pop(), "architecture.choices.fusion", "3 boundaries"),
        (lambda c: c["fusion"][1].append(0), "architecture.choices.fusion[1]", "0->1"),
        (lambda c: c["fusion"][2].__setitem__(1, 0.5), "architecture.choices.fusion[2][1]", "[0, 1]"),
    ],
)
def test_validate_names_the_bad_field(edit: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.validate(Architecture(space="fbnetv5", version="1", choices=_choices(edit)))
    assert info.value.field == field and words in info.value.message


def test_transformer_blocks_need_the_hybrid_option() -> None:
    plain = FBNetV5Space(depth_mult=0.2, extra_blocks=1)
    choices = json.loads(json.dumps(plain.sample(random.Random(0)).choices))
    choices["blocks"][3][3][0] = 2
    with pytest.raises(InvalidInput) as info:
        plain.validate(Architecture(space="fbnetv5", version="1", choices=choices))
    assert info.value.field == "architecture.choices.blocks[3][3][0]" and "options.hybrid" in info.value.message


@pytest.mark.parametrize(
    ("macro", "field"),
    [
        ({"tasks": ["classification", "classification"]}, "macro.tasks"),
        ({"tasks": []}, "macro.tasks"),
        ({"tasks": ["depth"]}, "macro.tasks.0"),
        ({"cls_paths": [4]}, "macro.cls_paths"),
        ({"stages": 5}, "macro.stages"),
        ({"hybrid": False}, "macro.hybrid"),
        ({"det_path": 7}, "macro.det_path"),
    ],
)
def test_macro_errors_name_the_field(macro: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.macro(macro)
    assert info.value.field == field


def test_options_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as info:
        FBNetV5Space(stages=3)
    assert info.value.field == "space.options.stages"


def test_describe_lists_paths_masks_and_tasks() -> None:
    d = get_space("fbnetv5").describe()
    json.dumps(d)
    assert d["tasks"] == TASKS and d["paths"] == ["H/4", "H/8", "H/16", "H/32"]
    assert d["searched_blocks"] == [[3], [2, 4], [2, 2, 9], [2, 2, 2, 5]]
    assert d["num_masks"] == 33 + sum(len(fusion_edges(b)) for b in range(3)) == 41
    assert d["presets"]["fbnetv3-a"]["input_size"] == 224


# ------------------------------------------------------------------------------------------------ info and export
def test_nas_info_reports_per_task_costs(capsys: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    from nas.cli import app

    result = CliRunner().invoke(
        app, ["info", "fbnetv5:fbnetv3-a", "--task", "classification", "--task", "detection", "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.strip().splitlines()[-1])
    tasks = info["tasks"]
    assert set(tasks) == {"classification", "detection"}
    assert tasks["classification"]["params"] == 8_600_448  # FBNetV3-A alone
    assert info["params"] > tasks["classification"]["params"]
    bad = CliRunner().invoke(app, ["info", "hytra:bossnet-t0", "--task", "segmentation"])
    assert bad.exit_code == 2 and "--task" in bad.output


def test_export_in_every_format_rebuilds_a_multi_task_hybrid_network(tmp_path: Any) -> None:
    arch = SPACE.sample(random.Random(3))
    macro = {**TINY, "tasks": TASKS}
    torch.manual_seed(0)
    model = SPACE.build(arch, macro).eval()
    files = export_model(model, arch, macro, SPACE, tmp_path, input_shape=(1, 3, SIDE, SIDE))
    assert set(files) == {"json", "safetensors", "torchscript", "onnx", "python"}
    manifest = json.loads((tmp_path / "arch.json").read_text())
    assert manifest["macro"]["stages"] == 4 and manifest["macro"]["hybrid"] is True
    assert manifest["warnings"] == []
    source = (tmp_path / "model.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(nas|searchspaces)\b", source, re.MULTILINE)  # PyTorch only


def test_spos_trains_the_classification_supernet(tmp_path: Any) -> None:
    """The space works with the existing single-path machinery (classification, the default task)."""
    from nas.checkpoint import CheckpointStore
    from nas.events import ListReporter
    from nas.strategies.base import SearchContext, get_strategy
    from tests.conftest import tiny_splits

    space = FBNetV5Space(depth_mult=0.2, extra_blocks=1)
    ctx = SearchContext(
        space=space,
        macro=space.macro({**TINY, "head_channels": 16}, num_classes=3, in_channels=1),
        data=tiny_splits(n_train=32),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(tmp_path / "ckpt"),
        reporter=ListReporter(),
        seed=2,
    )
    before = {k: v.clone() for k, v in space.supernet(ctx.macro).state_dict().items()}
    strategy = get_strategy("spos", {"epochs": 1, "train": {"batch_size": 16, "lr": 0.05, "epochs": 1}})
    net = strategy.train_supernet(ctx)  # type: ignore[attr-defined]
    after = net.state_dict()
    assert isinstance(net, FBNetV5Supernet) and before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("net.blocks."))
