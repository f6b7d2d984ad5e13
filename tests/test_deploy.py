"""The deployment files: docker-compose.yml (parsed by a real compose), the Dockerfile and docs/deploy.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

SERVICES = {"postgres", "ray-head", "worker-gpu", "controller"}
NAS_SERVICES = ("ray-head", "worker-gpu", "controller")  # run the nas-service image
CLUSTER_ENV = {
    "NAS_DATABASE_URL": "postgresql+psycopg://nas:nas@postgres:5432/nas",
    "NAS_RAY_ADDRESS": "ray-head:6380",
    "NAS_DATA_DIR": "/data",
    "NAS_DATASET_ROOTS": "/datasets",
}


# ---------------------------------------------------------------- docker-compose.yml


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) if it works here, else `docker-compose` (v1, e.g. Debian's package)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def compose_required() -> bool:
    """In CI (CI=true, or NAS_TEST_REQUIRE_COMPOSE=1 from .ci/run) a missing compose tool fails instead of skipping."""
    flag = {"1", "true", "yes"}
    return os.environ.get("CI", "").lower() in flag or os.environ.get("NAS_TEST_REQUIRE_COMPOSE", "").lower() in flag


def compose_config(**env: str) -> tuple[str, dict[str, Any]]:
    command = compose_command()
    if command is None:
        missing = "neither `docker compose` nor `docker-compose` is installed"
        if compose_required():
            pytest.fail(f"{missing}, but CI must check docker-compose.yml with a real compose", pytrace=False)
        pytest.skip(
            f"{missing}, so docker-compose.yml was only checked structurally (install the compose plugin or "
            "Debian's docker-compose package)"
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NAS_")}
    proc = subprocess.run(
        [*command, "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{' '.join(command)} config rejected docker-compose.yml:\n{proc.stderr}"
    return proc.stdout, yaml.safe_load(proc.stdout)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def volume_specs(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, from the short or the long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            out.append((str(v.get("source")), v["target"], bool(v.get("read_only", False))))
    return out


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def gpu_reservation(service: dict[str, Any]) -> dict[str, Any]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    return devices[0]


def check_cluster_shape(config: dict[str, Any], gpus: str) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    for name in NAS_SERVICES:
        env = env_of(services[name])
        assert {k: env.get(k) for k in CLUSTER_ENV} == CLUSTER_ENV, f"{name}: NAS_ environment"
        volumes = volume_specs(services[name])
        assert ("nas-data", "/data", False) in volumes, f"{name}: the shared artifact volume"
        assert next(v for v in volumes if v[1] == "/datasets")[2], f"{name}: datasets must be read-only"
    assert {"nas-data", "pgdata"} <= set(config["volumes"])

    controller = services["controller"]
    assert command_of(controller) == ["up", "--host", "0.0.0.0", "--port", "8321"]
    depends = controller["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert "ray-head" in depends
    assert any(str(p.get("target") if isinstance(p, dict) else p).split(":")[-1] == "8321" for p in controller["ports"])

    head = services["ray-head"]
    assert services["ray-head"]["entrypoint"] in (["ray"], "ray")
    head_cmd = command_of(head)
    assert head_cmd[:2] == ["start", "--head"] and "--port=6380" in head_cmd and "--block" in head_cmd
    assert "--dashboard-host=0.0.0.0" in head_cmd

    worker = services["worker-gpu"]
    worker_cmd = command_of(worker)
    assert worker_cmd[:3] == ["worker", "--address", "ray-head:6380"]
    device = gpu_reservation(worker)
    assert device["driver"] == "nvidia" and list(device["capabilities"]) == ["gpu"]
    assert str(device["count"]) == gpus
    assert worker_cmd[worker_cmd.index("--num-gpus") + 1] == gpus

    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["postgres"]["healthcheck"]["test"]


def test_compose_config_accepts_the_file() -> None:
    text, config = compose_config()
    check_cluster_shape(config, gpus="1")
    assert "6379" not in text  # Redis's port on our machines; the Ray head uses 6380


def test_compose_gpu_count_is_configurable() -> None:
    _, config = compose_config(NAS_GPU_COUNT="2")
    check_cluster_shape(config, gpus="2")


def test_compose_file_structure() -> None:
    """Without any compose tool: the same shape, read with pyyaml (anchors resolved, variables not interpolated)."""
    text = COMPOSE.read_text()
    assert "6379" not in text
    config = yaml.safe_load(text)
    assert "version" not in config  # the Compose Specification: no version key
    device = gpu_reservation(config["services"]["worker-gpu"])
    assert device["count"] == "${NAS_GPU_COUNT:-1}"
    substituted = yaml.safe_load(re.sub(r"\$\{NAS_GPU_COUNT:-1\}", "1", text))
    substituted["services"]["controller"]["ports"] = ["8321:8321"]
    for name in NAS_SERVICES:  # the short volume syntax before interpolation
        for i, v in enumerate(substituted["services"][name]["volumes"]):
            substituted["services"][name]["volumes"][i] = re.sub(r"\$\{NAS_DATASETS_DIR:-([^}]*)\}", r"\1", v)
    check_cluster_shape(substituted, gpus="1")


def test_compose_sets_only_real_settings() -> None:
    """Every NAS_ variable the deployment sets is a field of service.settings.Settings (no silently ignored typos)."""
    fields = {f"NAS_{name.upper()}" for name in Settings.model_fields}
    config = yaml.safe_load(COMPOSE.read_text())
    for name in NAS_SERVICES:
        unknown = {k for k in env_of(config["services"][name]) if k.startswith("NAS_")} - fields
        assert not unknown, f"{name} sets unknown settings {unknown}"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), " ".join(args.split())))
    return out


def test_dockerfile_installs_pinned_torch_before_the_project() -> None:
    instructions = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in instructions if i == "ARG" and "=" in a}
    runs = [a for i, a in instructions if i == "RUN"]
    torch_step = next(n for n, r in enumerate(runs) if re.search(r"pip install \S*torch==", r))
    project = re.compile(r"pip install (\S+ )*\"?\.(\[[a-z,]+\])?\"?( |$)")  # pip install . / ".[ray]"
    project_step = next(n for n, r in enumerate(runs) if project.search(r))
    assert torch_step < project_step, "torch must be installed before the project"
    assert ".[service]" in runs[project_step]  # the service's packages, Ray included

    assert '"torch==${TORCH_VERSION}"' in runs[torch_step]
    makefile_pin = re.search(r"torch==([0-9][^\s\"]*)", (ROOT / "Makefile").read_text())
    assert makefile_pin is not None
    assert args["TORCH_VERSION"] == makefile_pin.group(1), "the image and `make setup` pin the same torch"
    assert args["TORCH_VARIANT"] == "cpu"  # CPU wheel by default; --build-arg TORCH_VARIANT=cu128 for GPU images
    assert "--index-url" in runs[torch_step] and "download.pytorch.org/whl/${TORCH_VARIANT}" in runs[torch_step]
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["RAY_VERSION"]), "Ray is pinned: all nodes of a cluster must match"


# the distribution's top-level packages (pyproject.toml: tool.setuptools.packages.find), all needed in the image
PACKAGES = {
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
}


def test_dockerfile_runtime() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    envs = " ".join(a for i, a in instructions if i == "ENV")
    assert "NAS_DATA_DIR=/data" in envs
    assert ("EXPOSE", "8321") in instructions
    assert ("ENTRYPOINT", '["nas"]') in instructions
    copied = {a.split()[0] for i, a in instructions if i == "COPY"}
    assert {*PACKAGES, "pyproject.toml"} <= copied
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if not ln.startswith("#")]
    assert {".git", ".venv", "runs"} <= set(ignored)
    assert not {*PACKAGES, "pyproject.toml", "README.md"} & set(ignored)


# ---------------------------------------------------------------- docs/deploy.md


def test_deploy_doc_lists_every_setting() -> None:
    doc = DEPLOY_DOC.read_text()
    missing = [f"NAS_{n.upper()}" for n in Settings.model_fields if f"`NAS_{n.upper()}`" not in doc]
    assert not missing, f"docs/deploy.md does not document {missing}"
    for needed in ("nas up", "nas worker --address", "nas db upgrade", "KubeRay", "--scale worker-gpu"):
        assert needed in doc
