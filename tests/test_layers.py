"""The engine stands apart from the service: imports point one way, and the engine runs without the service's packages.

The same contracts are checked by import-linter (``make lint-imports``, in CI); these tests check what a user sees:
what importing the engine or the SDK loads, and that a local search and ``nas info`` run where the service's packages
cannot be imported at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

SERVICE_PACKAGES = ("fastapi", "starlette", "uvicorn", "sse_starlette", "sqlalchemy", "alembic", "psycopg", "ray")

# A meta-path finder that makes the service's packages unimportable, as in `pip install .` without extras.
BLOCK = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class _NoService(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {SERVICE_PACKAGES!r} + ("pydantic_settings", "prometheus_client"):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NoService())
    """
)


def python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_engine_imports_no_service_package() -> None:
    loaded = loaded_after("import nas, nas.runner, nas.load, nas.export, nas.measure")
    assert "torch" in loaded  # the check sees what was really imported
    assert not loaded & {*SERVICE_PACKAGES, "api", "workers", "service"}


def test_cli_loads_service_commands_without_their_packages() -> None:
    """`nas` finds `up`, `worker`, `admin` and `db` through entry points; their heavy packages load only when run."""
    loaded = loaded_after("import nas.cli")
    assert not loaded & set(SERVICE_PACKAGES)


def test_sdk_imports_no_torch_ray_web_framework_or_database() -> None:
    loaded = loaded_after("import nas.client; from nas.client import Client, Search, SearchSpec")
    assert "httpx" in loaded
    assert not loaded & {"torch", "ray", "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg"}


def test_import_contracts_hold() -> None:
    """import-linter's contracts (pyproject.toml): the same check CI runs with `make lint-imports`."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "lint-imports is a dev dependency: pip install -e '.[service,dev]'"
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


SPEC = {
    "name": "no-service",
    "seed": 0,
    "device": "cpu",
    "space": {
        "name": "nasnet",
        "options": {"ops": ["sep_conv_3x3", "max_pool_3x3", "skip_connect"]},
        "macro": {"cells_per_stack": 1, "filters": 8, "stem_multiplier": 1},
    },
    "dataset": {"name": "digits", "image_size": 8, "limit": 120},
    "strategy": {
        "name": "random",
        "options": {"trials": 2, "train": {"epochs": 1, "batch_size": 32}},
    },
    "final": {"train": {"epochs": 1, "batch_size": 32}, "export": ["json", "safetensors"]},
}


@pytest.mark.slow
def test_local_search_info_and_load_run_without_the_service_packages(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "run"
    code = BLOCK + textwrap.dedent(
        f"""
        from typer.testing import CliRunner
        from nas.cli import app

        runner = CliRunner()
        r = runner.invoke(app, ["info", "nasnet:nasnet-a-mobile", "--input-size", "32", "--json"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["search", {str(spec)!r}, "--local", "-o", {str(out)!r}, "-q"])
        assert r.exit_code == 0, r.output
        import json, pathlib, torch, nas
        final = json.loads((pathlib.Path({str(out)!r}) / "result.json").read_text())["final"][0]
        model = nas.load(final["directory"])
        print(tuple(model(torch.zeros(1, 1, 8, 8)).shape))
        """
    )
    proc = python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "(1, 10)"


def test_service_command_without_the_service_packages_says_what_to_install() -> None:
    code = BLOCK + "import sys\nfrom nas.cli import run\nsys.argv = ['nas', 'admin', 'list-users']\nrun()\n"
    proc = python(code)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'nas-service[service]'" in proc.stderr
    assert "Traceback" not in proc.stderr
