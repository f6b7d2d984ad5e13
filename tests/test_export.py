"""Export (nas.export) and loading (nas.load) of a trained network, with a tiny space defined here."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import nn

import nas
from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.export import (
    ExportError,
    _as_module,
    _check_standalone,
    _strip_imports,
    export_model,
    state_dict_for_safetensors,
)
from nas.load import load, load_torchscript, read_manifest
from nas.space import MacroBase, SearchSpace, get_space, register_space, resolve_arch_ref
from nas.supernet import Supernet
from tests import export_toy_net, export_toy_ops

WIDTHS = (4, 8)
KERNELS = (1, 3, 5)
SHAPE = (1, 3, 12, 12)
ALL_FILES = {"arch.json", "model.safetensors", "model.ts", "model.onnx", "model.py"}


class ExportMacro(MacroBase):
    stem: int = Field(4, ge=1, le=64)


class ExportToySpace(SearchSpace):
    """Two conv layers whose widths and kernel sizes are searched."""

    name = "toyexport"
    version = "1"
    Macro = ExportMacro

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({"widths": [rng.choice(WIDTHS) for _ in range(2)], "kernels": [rng.choice(KERNELS)] * 2})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        return self.sample(rng)

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        return a

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        for key, allowed in (("widths", WIDTHS), ("kernels", KERNELS)):
            values = arch.choices.get(key)
            if not isinstance(values, list) or len(values) != 2 or any(v not in allowed for v in values):
                raise InvalidInput(f"architecture.choices.{key}", f"must be 2 values from {allowed}")

    def log10_size(self) -> float:
        return 2 * math.log10(len(WIDTHS) * len(KERNELS))

    def choices_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        self.validate(arch)
        return export_toy_net.build_network(arch.choices, self.macro(macro).model_dump())

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        raise NotImplementedError

    def standalone_modules(self) -> list[ModuleType]:
        return [export_toy_ops, export_toy_net]


class NoStandaloneSpace(ExportToySpace):
    name = "toyexport_nostandalone"

    def standalone_modules(self) -> list[ModuleType]:
        return []


register_space(ExportToySpace)
register_space(NoStandaloneSpace)


def trained_like(space: SearchSpace, arch: Architecture, macro: dict[str, Any]) -> nn.Module:
    """A network with random weights *and* random BatchNorm statistics, so a wrong load cannot go unnoticed."""
    torch.manual_seed(0)
    model = space.build(arch, macro)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, Architecture, dict[str, str]]:
    space = ExportToySpace()
    arch = space.make({"widths": [8, 4], "kernels": [3, 5]})
    model = trained_like(space, arch, {"num_classes": 5})
    out = tmp_path_factory.mktemp("export") / "final"
    files = export_model(
        model,
        arch,
        {"num_classes": 5},
        space,
        out,
        input_shape=SHAPE,
        metrics={"accuracy": 0.5},
        preprocessing={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    )
    return out, model, arch, files


def batch(n: int = 3) -> torch.Tensor:
    return torch.randn((n, *SHAPE[1:]), generator=torch.Generator().manual_seed(7))


def test_export_writes_all_files_and_a_complete_manifest(exported) -> None:
    out, model, arch, files = exported
    assert files == {
        "json": "arch.json",
        "safetensors": "model.safetensors",
        "torchscript": "model.ts",
        "onnx": "model.onnx",
        "python": "model.py",
    }
    assert {p.name for p in out.iterdir()} == ALL_FILES  # no temporary files left behind
    manifest = read_manifest(out)
    assert manifest["format_version"] == 1
    assert Architecture.from_dict(manifest["architecture"]) == arch
    assert manifest["arch_hash"] == arch.hash
    assert manifest["macro"] == {"num_classes": 5, "in_channels": 3, "stem": 4}  # defaults filled in
    assert manifest["input_size"] == 12
    assert manifest["input_shape"] == list(SHAPE)
    assert (manifest["in_channels"], manifest["num_classes"]) == (3, 5)
    assert manifest["metrics"] == {"accuracy": 0.5}
    assert manifest["preprocessing"]["std"] == [0.25, 0.25, 0.25]
    assert manifest["files"] == files
    assert manifest["costs"]["params"] == sum(p.numel() for p in model.parameters())
    assert manifest["warnings"] == []


def test_manifest_resolves_as_an_architecture_reference(exported) -> None:
    out, _, arch, _ = exported
    space, got, macro, size = resolve_arch_ref(str(out / "arch.json"))
    assert (space.name, got, macro["num_classes"], size) == ("toyexport", arch, 5, 12)


@pytest.mark.parametrize("target", ["", "arch.json", "model.safetensors"])
def test_nas_load_reproduces_outputs(exported, target: str) -> None:
    out, model, _, _ = exported
    loaded = load(out / target if target else out)
    assert not loaded.training
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_package_level_load(exported) -> None:
    out, model, _, _ = exported
    x = batch(2)
    with torch.no_grad():
        torch.testing.assert_close(nas.load(str(out))(x), model(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_reproduces_outputs_for_another_batch_size(exported) -> None:
    out, model, _, _ = exported
    x = batch(3)
    with torch.no_grad():
        torch.testing.assert_close(load_torchscript(out)(x), model(x))
        torch.testing.assert_close(torch.jit.load(str(out / "model.ts"))(x), model(x))


def test_onnx_passes_the_checker_and_computes_the_same_logits(exported) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    out, model, _, _ = exported
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    x = batch(3)
    assert [i.name for i in proto.graph.input] == ["input"]
    (got,) = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-4)


def test_onnx_runs_in_onnxruntime(exported) -> None:
    import onnxruntime as ort  # a dev dependency

    out, model, _, _ = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = batch(4)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-4)


STANDALONE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, runpy, sys
    BLOCKED = {"nas", "searchspaces", "tests"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    import torch
    import model  # the generated model.py in the working directory
    x = torch.load("input.pt")
    with torch.no_grad():
        a = model.load()(x)
        BLOCKED.add("safetensors")  # now the built-in safetensors reader must do
        for name in [m for m in sys.modules if m.split(".")[0] == "safetensors"]:
            del sys.modules[name]
        b = model.load("model.safetensors")(x)
    torch.save({"a": a, "b": b}, "outputs.pt")
    runpy.run_path("model.py", run_name="__main__")
    """
)


def run_standalone(out: Path, work: Path, model: nn.Module, x: torch.Tensor) -> str:
    """Run the exported model.py in a fresh interpreter that cannot import the project; compare its outputs."""
    work.mkdir()
    for name in ("model.py", "model.safetensors"):
        (work / name).write_bytes((out / name).read_bytes())
    source = (work / "model.py").read_text()
    project_imports = re.compile(r"^\s*(from|import)\s+(nas|searchspaces|tests)\b", re.MULTILINE)
    assert not project_imports.search(source)
    assert source.count("from __future__ import") <= 1
    torch.save(x, work / "input.pt")
    proc = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    outputs = torch.load(work / "outputs.pt")
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(outputs["a"], want)
    torch.testing.assert_close(outputs["b"], want)
    return proc.stdout


def test_standalone_model_py_needs_nothing_from_the_project(exported, tmp_path: Path) -> None:
    out, model, _, _ = exported
    stdout = run_standalone(out, tmp_path / "standalone", model, batch(2))
    assert "-> output (1, 5) (weights loaded)" in stdout


def test_unknown_format_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    space = ExportToySpace()
    arch = space.make({"widths": [4, 4], "kernels": [1, 1]})
    out = tmp_path / "never"
    with pytest.raises(InvalidInput) as err:
        export_model(space.build(arch), arch, {}, space, out, input_shape=SHAPE, formats=["json", "keras"])
    assert err.value.field == "final.export[1]"
    assert "allowed: json, safetensors, torchscript, onnx, python" in err.value.message
    assert not out.exists()


def test_failure_midway_removes_the_files_of_this_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.export as export

    space = ExportToySpace()
    arch = space.make({"widths": [4, 4], "kernels": [1, 1]})
    out = tmp_path / "partial"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(export, "_write_torchscript", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_model(space.build(arch), arch, {}, space, out, input_shape=SHAPE, formats=["safetensors", "torchscript"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh" / "dir"
    with pytest.raises(RuntimeError):
        export_model(space.build(arch), arch, {}, space, fresh, input_shape=SHAPE, formats=["torchscript"])
    assert not fresh.exists()


def test_space_without_standalone_modules_skips_python_with_a_warning(tmp_path: Path) -> None:
    space = NoStandaloneSpace()
    arch = space.make({"widths": [4, 8], "kernels": [3, 1]})
    files = export_model(space.build(arch), arch, {}, space, tmp_path, input_shape=SHAPE, formats=["python"])
    assert files == {"json": "arch.json"}
    assert not (tmp_path / "model.py").exists()
    assert "no standalone modules" in read_manifest(tmp_path)["warnings"][0]


def test_load_errors_name_the_problem(exported, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        load(tmp_path / "missing")
    assert err.value.field == "path"
    with pytest.raises(InvalidInput, match=r"arch\.json"):
        load(tmp_path)  # exists, but is no export folder

    out = exported[0]
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "arch.json").write_bytes((out / "arch.json").read_bytes())
    with pytest.raises(InvalidInput, match=r"model\.safetensors"):
        load(no_weights)

    manifest = json.loads((out / "arch.json").read_text())
    wrong_space = tmp_path / "wrong_space"
    wrong_space.mkdir()
    manifest_bad = {**manifest, "architecture": {**manifest["architecture"], "space": "no-such-space"}}
    (wrong_space / "arch.json").write_text(json.dumps(manifest_bad))
    with pytest.raises(InvalidInput) as err:
        load(wrong_space)
    assert err.value.field == "space"

    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    choices = {"widths": [4, 4], "kernels": [3, 5]}
    manifest_bad = {**manifest, "architecture": {**manifest["architecture"], "choices": choices}}
    (mismatch / "arch.json").write_text(json.dumps(manifest_bad))
    (mismatch / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(InvalidInput, match="do not match"):
        load(mismatch)

    with pytest.raises(InvalidInput):
        load_torchscript(tmp_path)


def test_tied_weights_are_saved_once_per_name_and_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight
    state = state_dict_for_safetensors(model)
    save_file(state, str(tmp_path / "w.safetensors"))
    fresh = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    torch.testing.assert_close(fresh[1].weight, model[0].weight)


def test_strip_imports_keeps_blocks_valid() -> None:
    source = textwrap.dedent(
        """
        from __future__ import annotations
        import math
        import nasty
        from nas.ops import (
            SepConv,
            DilConv,
        )
        from searchspaces.nasnet.ops import OPS
        import nas
        from tests.export_toy_ops import LayerCfg
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from nas.arch import Architecture
        x = 1
        """
    )
    lines, features = _strip_imports(source, ["tests.export_toy_ops"])
    code = "\n".join(lines)
    compile(code, "<test>", "exec")
    assert features == ["annotations"]
    assert "import nasty" in code and "import math" in code
    assert "nas" not in code.replace("nasty", "")
    assert "searchspaces" not in code and "tests." not in code
    assert "    pass" in code


def test_standalone_check_runs_without_this_projects_future_flags() -> None:
    # without ``from __future__ import annotations`` in the generated file, an annotation naming something that
    # was not imported fails at definition time; the check must see that as the real file would
    source = "def f(x: Undefined) -> None:\n    pass\n\ndef build():\n    return None\n"
    with pytest.raises(ExportError, match="python"):
        _check_standalone(source, nn.Linear(2, 2), torch.zeros(1, 2))


def test_a_function_listed_as_standalone_module_resolves_to_its_module() -> None:
    assert _as_module(export_toy_net, 0) is export_toy_net
    assert _as_module(export_toy_net.build_network, 1) is export_toy_net


def test_tiny_nasnet_exports_and_reloads(tmp_path: Path) -> None:
    space = get_space("nasnet")
    arch = space.sample(random.Random(0))
    macro = space.macro({"cells_per_stack": 1, "filters": 8, "stem_multiplier": 1}, num_classes=4).model_dump()
    torch.manual_seed(0)
    model = space.build(arch, macro).eval()
    formats = ["json", "safetensors", "python"]
    out = tmp_path / "export"
    files = export_model(model, arch, macro, space, out, input_shape=(1, 3, 16, 16), formats=formats)
    assert set(files) == set(formats)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load(out)(x), model(x))
    assert "-> output (1, 4)" in run_standalone(out, tmp_path / "standalone", model, x)
