"""The ``nas`` command."""

from __future__ import annotations

import functools
import gc
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas import cli_sdk, cli_server
from nas.errors import CheckpointError, InvalidInput

app = typer.Typer(
    name="nas",
    help="Neural architecture search over hybrid CNN-Transformer spaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True, log_path=False)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn InvalidInput into a one-line error and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidInput, CheckpointError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
@user_errors
def spaces(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List the search spaces, their size and presets."""
    from nas.space import get_space, space_names

    infos = [get_space(name).describe() for name in space_names()]
    if as_json:
        out.print_json(json.dumps(infos))
        return
    table = Table(title="search spaces")
    for col in ("name", "version", "log10 size", "tasks", "presets"):
        table.add_column(col)
    for d in infos:
        table.add_row(d["name"], d["version"], f"{d['log10_size']:.1f}", ", ".join(d["tasks"]), ", ".join(d["presets"]))
    out.print(table)


@app.command()
@user_errors
def strategies(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the search strategies and their options."""
    from nas.strategies.base import strategy_class, strategy_names

    infos = [
        {"name": n, "doc": _first_line(strategy_class(n).__doc__ or sys.modules[strategy_class(n).__module__].__doc__),
         "tasks": list(strategy_class(n).tasks), "options": strategy_class(n).Options.model_json_schema()}
        for n in strategy_names()
    ]  # fmt: skip
    if as_json:
        out.print_json(json.dumps(infos))
        return
    for info in infos:
        out.print(f"[bold]{info['name']}[/bold] ({', '.join(info['tasks'])}): {info['doc']}")


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


@app.command()
@user_errors
def datasets(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the datasets a search can use."""
    from nas.data import describe_datasets

    infos = describe_datasets()
    if as_json:
        out.print_json(json.dumps(infos))
        return
    table = Table(title="datasets")
    keys = list(infos[0]) if infos else []
    for k in keys:
        table.add_column(k)
    for d in infos:
        table.add_row(*(str(d[k]) for k in keys))
    out.print(table)


@app.command()
@user_errors
def info(
    ref: Annotated[str, typer.Argument(help="SPACE:PRESET (e.g. nasnet:nasnet-a-mobile) or an architecture JSON file")],
    input_size: Annotated[int | None, typer.Option("--input-size", min=8, max=1024, help="square input size")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency/--no-latency",
            help="also build the network with real weights and time it on --device (off: latency_ms and device"
            " are null)",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="device for --latency: auto, cpu or cuda")] = "auto",
    num_classes: Annotated[int | None, typer.Option("--num-classes", min=1, max=100_000)] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="build the network for this task (repeat for several; spaces with task heads, e.g. fbnetv5): the"
            " costs of the whole network, and per task those of the network built for that task alone",
        ),
    ] = None,
) -> None:
    """Params and MACs of an architecture (and its latency with --latency).

    Params and MACs are counted from shapes alone, on the meta device: no weights, no data, seconds even for large nets.
    --latency also builds the real network and times forward passes on --device.
    """
    from nas.measure import measure_build_costs
    from nas.runner import resolve_device
    from nas.space import resolve_arch_ref

    if device not in {"auto", "cpu", "cuda"}:
        raise InvalidInput("--device", f"{device!r} is not allowed; allowed: auto, cpu, cuda")
    space, arch, macro_data, preset_size = resolve_arch_ref(ref)
    if num_classes is not None:
        macro_data["num_classes"] = num_classes
    if task:
        if "tasks" not in space.Macro.model_fields:
            raise InvalidInput("--task", f"space {space.name!r} builds {', '.join(space.tasks)} networks only")
        macro_data["tasks"] = list(task)
    macro = space.macro(macro_data).for_inference()
    size = input_size or preset_size or 32
    dev = resolve_device(device)
    shape = (1, macro.in_channels, size, size)
    costs = measure_build_costs(lambda: space.build(arch, macro), shape, device=dev, latency=latency)
    per_task: dict[str, dict[str, int]] = {}
    for name in task or []:
        alone = space.macro(macro_data, tasks=[name]).for_inference()
        alone_costs = measure_build_costs(lambda m=alone: space.build(arch, m), shape)  # type: ignore[misc]
        per_task[name] = {"params": int(alone_costs["params"]), "macs": int(alone_costs["macs"])}
    result: dict[str, Any] = {
        "ref": ref,
        "space": arch.space,
        "hash": arch.hash,
        "input_size": size,
        "params": int(costs["params"]),
        "macs": int(costs["macs"]),
        "latency_ms": round(costs["latency_ms"], 4) if latency else None,
        "device": str(dev) if latency else None,
    }
    if per_task:
        result["tasks"] = per_task
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=ref, show_header=False)
    for k, v in result.items():
        if k == "tasks":
            for name, one in per_task.items():
                table.add_row(f"{name} alone", f"{one['params']:,} params, {one['macs']:,} MACs")
            continue
        table.add_row(k, f"{v:,}" if isinstance(v, int) else "- (pass --latency)" if v is None else str(v))
    out.print(table)


@app.command()
@user_errors
def search(
    spec_file: Annotated[Path, typer.Argument(help="search spec (YAML or JSON)", metavar="SPEC")],
    local: Annotated[bool, typer.Option("--local", help="run in this process, with no server")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="run folder (default runs/NAME-HASH)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted search")] = False,
    device: Annotated[str | None, typer.Option(help="override the spec's device: auto, cpu or cuda")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Run a search described by SPEC. With --local it runs here, end to end, and prints a summary."""
    from nas.specio import load_spec

    spec = load_spec(spec_file)
    if device is not None:
        if device not in {"auto", "cpu", "cuda"}:
            raise InvalidInput("--device", f"{device!r} is not allowed; allowed: auto, cpu, cuda")
        spec = spec.model_copy(update={"device": device})
    if not local:
        raise InvalidInput(
            "--local", "`nas search` runs here only: pass --local, or submit to the service with `nas submit SPEC -w`"
        )
    _run_local(spec, spec_file, output, resume, quiet)


def _run_local(spec: Any, spec_file: Path, output: Path | None, resume: bool, quiet: bool) -> None:
    from nas.progress import RichReporter, final_table, summary_table
    from nas.runner import default_output, run_search

    target = output or default_output(spec)
    reporter = RichReporter(err, quiet=quiet)
    try:
        with reporter:
            result = run_search(spec, target, reporter=reporter, resume=resume)
    except KeyboardInterrupt:
        err.print(
            f"\n[yellow]interrupted[/yellow]; continue with: nas search {spec_file} --local --resume"
            + (f" --output {output}" if output else ""),
            highlight=False,
        )
        raise typer.Exit(130) from None
    out.print(summary_table(result))
    if result.final:
        out.print(final_table(result))
    out.print(f"results in {result.directory}/result.json")


@app.command("export")
@user_errors
def export_cmd(
    ref: Annotated[str, typer.Argument(help="a trained model folder (from a search), SPACE:PRESET, or arch JSON")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder to write")],
    formats: Annotated[
        list[str] | None, typer.Option("--format", "-f", help="json, safetensors, torchscript, onnx, python")
    ] = None,
    input_size: Annotated[int | None, typer.Option("--input-size", min=8, max=1024)] = None,
) -> None:
    """Export a trained model (or an untrained architecture) to JSON, safetensors, TorchScript, ONNX and Python."""
    from nas.export import export_model
    from nas.space import get_space, resolve_arch_ref
    from nas.spec import ALL_EXPORTS

    if output.exists() and any(output.iterdir()):
        raise InvalidInput("--output", f"{str(output)!r} already holds files; choose an empty folder")
    ref_path = Path(ref)
    meta_file = ref_path / "arch.json" if ref_path.is_dir() else None
    if meta_file is not None and meta_file.is_file():
        from nas import load

        meta = json.loads(meta_file.read_text())
        model = load(ref_path)
        from nas.arch import Architecture

        arch = Architecture.model_validate(meta["architecture"])
        space = get_space(arch.space, **meta.get("space_options", {}))
        macro = meta["macro"]
        size = input_size or meta.get("input_size") or 32
        metrics = meta.get("metrics")
        preprocessing = meta.get("preprocessing")
    else:
        space, arch, macro_data, preset_size = resolve_arch_ref(ref)
        model_macro = space.macro(macro_data)
        model = space.build(arch, model_macro)
        macro = model_macro.model_dump(mode="json")
        size = input_size or preset_size or 32
        metrics = preprocessing = None
        err.print("[yellow]note:[/yellow] exporting an untrained network (random weights)")
    files = export_model(
        model.eval(),
        arch,
        macro,
        space,
        output,
        input_shape=(1, int(macro.get("in_channels", 3)), size, size),
        formats=formats or list(ALL_EXPORTS),
        metrics=metrics,
        space_options=space.options.model_dump(mode="json"),
        preprocessing=preprocessing,
    )
    for fmt, name in files.items():
        out.print(f"{fmt:12s} {output / name}")


cli_sdk.register(app)
cli_server.register(app)


def run() -> None:  # pragma: no cover - console entry (tested in a subprocess)
    try:
        app()
    except ModuleNotFoundError as exc:
        hint = cli_server.missing_extra(exc)
        if hint is None:
            raise
        err.print(f"[red]error:[/red] {escape(hint)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    finally:
        # The process ends next. Exempt every live object from the collector's passes at interpreter shutdown: with
        # torch loaded (and torch._dynamo, which meta-device counting imports) they cost ~0.4 s of a `nas info`.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
