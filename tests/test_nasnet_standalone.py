"""The standalone-export contract: the sources of ``standalone_modules()``, concatenated with the project imports
dropped, define ``build_network(choices, macro)`` building the same network as ``space.build``."""

from __future__ import annotations

import inspect
import random
import sys
import types
from typing import Any

import pytest
import torch

from searchspaces.nasnet import NASNetSpace

PROJECT_IMPORTS = ("from nas", "from searchspaces", "import nas", "import searchspaces")


def standalone_namespace(space: NASNetSpace) -> dict[str, Any]:
    lines: list[str] = []
    for module in space.standalone_modules():
        source = inspect.getsource(module)
        assert "from __future__" not in source, module.__name__
        for line in source.splitlines():
            if line.startswith(PROJECT_IMPORTS):
                assert "(" not in line and not line.rstrip().endswith("\\"), f"multi-line import: {line}"
                continue
            assert not line.lstrip().startswith(PROJECT_IMPORTS), f"indented project import in {module.__name__}"
            lines.append(line)
    source = "\n".join(lines)
    for banned in ("pydantic", "numpy"):
        assert f"import {banned}" not in source
    name = "_nasnet_standalone_test"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(source, "standalone.py", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module.__dict__


@pytest.mark.parametrize(
    ("options", "macro", "size"),
    [
        ({}, {"filters": 4, "cells_per_stack": 1, "aux_head": True, "drop_path_keep": 0.7}, 16),
        ({}, {"kind": "darts", "layers": 4, "channels": 4}, 16),
        ({}, {"kind": "pnasnet", "stem": "imagenet", "filters": 8, "cells_per_stack": 1, "image_size": 48}, 48),
        ({"attention": True, "attention_heads": 4}, {"filters": 4, "cells_per_stack": 1}, 16),
    ],
)
def test_standalone_source_rebuilds_the_network(options: dict[str, Any], macro: dict[str, Any], size: int) -> None:
    space = NASNetSpace(**options)
    ns = standalone_namespace(space)
    arch = space.sample(random.Random(7))
    if options.get("attention"):
        choices = {t: {"blocks": [list(b) for b in arch.choices[t]["blocks"]], "concat": arch.choices[t]["concat"]}
                   for t in ("normal", "reduce")}  # fmt: skip
        choices["normal"]["blocks"][4][3] = "self_attention"
        arch = space.make(choices)
    torch.manual_seed(0)
    ref = space.build(arch, macro)
    ref.train()
    with torch.no_grad():
        ref(torch.randn(4, 3, size, size))  # non-trivial BN statistics
    ref.eval()
    macro_full = space.macro(macro).model_dump(mode="json")
    rebuilt = ns["build_network"](arch.choices, macro_full)
    assert type(rebuilt).__module__ == "_nasnet_standalone_test"
    assert list(rebuilt.state_dict()) == list(ref.state_dict())
    rebuilt.load_state_dict(ref.state_dict())
    rebuilt.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), ref(x), atol=1e-6)
    if options.get("attention"):
        heads = [m.heads for m in rebuilt.modules() if type(m).__name__ == "SelfAttention2d"]
        assert heads and set(heads) == {4}
