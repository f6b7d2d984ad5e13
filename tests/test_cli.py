from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()

SPEC = {
    "name": "cli-toy",
    "device": "cpu",
    "space": {"name": "toyconv", "macro": {"width": 4}},
    "dataset": {"name": "digits", "image_size": 8, "limit": 120},
    "strategy": {
        "name": "spos",
        "options": {"epochs": 1, "train": {"batch_size": 32}, "evolution": {"population": 3, "generations": 1}},
    },
    "final": {"train": {"epochs": 1, "batch_size": 32}, "export": ["json", "safetensors"]},
}


def write(tmp_path, data, name="spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


def test_search_local_prints_summary(tmp_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", write(tmp_path, SPEC), "--local", "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "retrained from scratch" in result.stdout
    assert (out / "result.json").is_file()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({**SPEC, "space": {"name": "nope"}}, "space: unknown space 'nope'"),
        ({**SPEC, "dataset": {"name": "imagefolder", "path": "/no/such/folder"}}, "dataset.path"),
        ({**SPEC, "dataset": {"name": "svhn"}}, "dataset.name"),
        ({**SPEC, "strategy": {"name": "spos", "options": {"epochs": 10**9}}}, "strategy.options.epochs"),
        ({**SPEC, "final": {"train": {"batch_size": -5}}}, "final.train.batch_size"),
        ({**SPEC, "strategy": {"name": "spos", "options": {"epochs": True}}}, "strategy.options.epochs"),
        ({**SPEC, "strategy": {"name": "spos", "options": {"epochs": "2"}}}, "strategy.options.epochs"),
        ({**SPEC, "space": {"name": "toyconv", "macro": {"width": "4"}}}, "macro.width"),
        ("space: [unclosed", "spec: spec.yaml is not valid YAML"),
        ("- just\n- a list\n", "spec: must be a mapping"),
    ],
)
def test_bad_input_one_line_exit_2_no_files(tmp_path, spec, needle) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["search", write(tmp_path, spec), "--local", "--output", str(out), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert not out.exists()


def test_missing_spec_file_and_missing_local(tmp_path) -> None:
    result = runner.invoke(app, ["search", str(tmp_path / "nope.yaml"), "--local"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(app, ["search", write(tmp_path, SPEC)])
    assert result.exit_code == 2 and "--local" in result.stderr


def test_info_of_an_arch_file_and_bad_arch(tmp_path) -> None:
    good = tmp_path / "arch.json"
    good.write_text(json.dumps({"space": "toyconv", "version": "1", "choices": {"ops": ["conv3", "skip", "conv5"]}}))
    result = runner.invoke(app, ["info", str(good), "--input-size", "8", "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data["params"], int) and isinstance(data["macs"], int) and data["macs"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"space": "toyconv", "version": "1", "choices": {"ops": ["conv3", "conv9", "skip"]}}))
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2 and "architecture.choices.ops[1]" in result.stderr
    result = runner.invoke(app, ["info", "toyconv:unknown-preset"])
    assert result.exit_code == 2 and "preset" in result.stderr


def test_listing_commands() -> None:
    result = runner.invoke(app, ["spaces", "--json"])
    assert result.exit_code == 0
    names = {s["name"] for s in json.loads(result.stdout)}
    assert "toyconv" in names
    result = runner.invoke(app, ["strategies", "--json"])
    assert {"spos", "random"} <= {s["name"] for s in json.loads(result.stdout)}
    result = runner.invoke(app, ["datasets", "--json"])
    assert "digits" in {d["name"] for d in json.loads(result.stdout)}


def test_info_of_a_nasnet_preset_matches_published_size() -> None:
    result = runner.invoke(app, ["info", "nasnet:nasnet-a-cifar", "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert abs(data["params"] - 3.3e6) / 3.3e6 < 0.02  # Zoph et al. 2018, Table 1: 3.3M
    assert data["input_size"] == 32 and isinstance(data["macs"], int)


def test_info_measures_latency_only_when_asked(tmp_path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "toyconv", "version": "1", "choices": {"ops": ["conv3", "skip", "conv5"]}}))
    plain = runner.invoke(app, ["info", str(arch), "--input-size", "8", "--json"])
    assert plain.exit_code == 0, plain.output
    counted = json.loads(plain.stdout)
    assert counted["latency_ms"] is None and counted["device"] is None  # same keys, not measured
    timed = runner.invoke(app, ["info", str(arch), "--input-size", "8", "--json", "--latency", "--device", "cpu"])
    assert timed.exit_code == 0, timed.output
    measured = json.loads(timed.stdout)
    assert list(measured) == list(counted)
    assert measured["latency_ms"] > 0 and measured["device"] == "cpu"
    assert (measured["params"], measured["macs"]) == (counted["params"], counted["macs"])
    assert "--latency" in runner.invoke(app, ["info", "--help"]).output


def test_yaml_numbers_keep_their_json_meaning(tmp_path) -> None:
    """Strict specs refuse strings for numbers, so YAML's exponent floats (``1e3``) must be read as numbers."""
    from nas.specio import load_spec

    text = yaml.safe_dump(SPEC).replace("limit: 120", "limit: 1.2e2").replace("epochs: 1\n", "epochs: 1e0\n", 1)
    spec = load_spec(write(tmp_path, text + "seed: 3.0e0\n"))
    assert spec.dataset.limit == 120 and isinstance(spec.dataset.limit, int)
    assert spec.seed == 3 and isinstance(spec.seed, int)
    assert "1e0" in text
