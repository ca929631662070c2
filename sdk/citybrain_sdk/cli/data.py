"""``citybrain-dev query``, ``infer``, ``models push/pull`` and ``datasets push/download``: the
commands that move data, with progress bars for transfers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from citybrain_sdk.cli.app import JsonOpt, app, ask, move, reply
from citybrain_sdk.cli.output import err, out, print_json, table
from citybrain_sdk.client import Client
from citybrain_sdk.resources.query import Aggregate, QueryResult, Where
from citybrain_sdk.tensors import DATATYPES, InferResult
from citybrain_sdk.types import Progress

models_app = typer.Typer(help="Publish and fetch model artifacts.", no_args_is_help=True)
datasets_app = typer.Typer(help="Publish and download dataset versions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")

_LIST_OPS = ("in", "not_in", "between")
_FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow", ".arrows": "arrow"}


def _scalar(text: str) -> Any:
    """A JSON value when the text is one (numbers, true, null, "quoted"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_where(text: str) -> Where:
    """``"intersection in I-03,I-07"`` → ``("intersection", "in", ["I-03", "I-07"])``.

    Example:
        >>> parse_where("count gt 10")
        ('count', 'gt', 10)
    """
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise typer.BadParameter(f"--where {text!r}: write 'COLUMN OP [VALUE]'")
    column, op = parts[0], parts[1]
    if len(parts) == 2:
        return (column, op)
    if op in _LIST_OPS:
        return (column, op, [_scalar(v.strip()) for v in parts[2].split(",")])
    return (column, op, _scalar(parts[2]))


def parse_aggregate(text: str) -> Aggregate:
    """``"avg:count:mean_flow"`` → ``("avg", "count", "mean_flow")``.

    Example:
        >>> parse_aggregate("count:*")
        ('count', '*')
    """
    parts = text.split(":")
    if len(parts) == 2:
        return (parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise typer.BadParameter(f"--agg {text!r}: write 'FN:COLUMN[:AS]'")


def _csv(values: str | None) -> list[str] | None:
    return [v.strip() for v in values.split(",") if v.strip()] if values else None


@app.command()
def query(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The dataset.")],
    select: Annotated[str | None, typer.Option(help="Columns, comma-separated.")] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="'COLUMN OP [VALUE]', e.g. 'count gt 10'.")
    ] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Columns.")] = None,
    agg: Annotated[
        list[str] | None, typer.Option(help="'FN:COLUMN[:AS]', e.g. 'avg:count:mean_flow'.")
    ] = None,
    order_by: Annotated[
        str | None, typer.Option("--order-by", help="Columns; '-col' descending.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write CSV/Parquet/Arrow here.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or arrow (else from -o).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Query a dataset: print a table, or write CSV/Parquet with -o."""
    plan: dict[str, Any] = {
        "select": _csv(select),
        "where": [parse_where(w) for w in where or ()],
        "group_by": _csv(group_by),
        "aggregates": [parse_aggregate(a) for a in agg or ()],
        "order_by": _csv(order_by),
        "limit": limit,
        "version": version,
    }
    if output is not None:
        file_format = fmt or _FILE_FORMATS.get(output.suffix.lower())
        if file_format is None:
            raise typer.BadParameter("give --format csv|parquet|arrow, or a known suffix")
        path = ask(
            ctx,
            lambda cb: cb.datasets.query_to_file(handle, output, format=file_format, **plan),
            handle=handle,
        )
        err.print(f"wrote {path} ({path.stat().st_size} bytes, {file_format})")
        return
    result = ask(ctx, lambda cb: cb.datasets.query(handle, **plan), handle=handle)
    reply(result, as_json, lambda result: _show_rows(handle, result))


def _show_rows(handle: str, result: QueryResult) -> None:
    table(
        f"{handle} v{result.version}" if result.version is not None else handle,
        result.column_names,
        result.rows,
    )
    notes = [f"{result.row_count} rows"]
    if result.masked:
        notes.append(f"masked: {', '.join(result.masked)}")
    if result.next_cursor:
        notes.append("more rows: page with the SDK's datasets.pages()")
    err.print("; ".join(notes))


def _load_array(np: Any, source: str) -> Any:
    path = Path(source)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".json":
        return np.asarray(json.loads(path.read_text(encoding="utf-8")))
    return np.asarray(json.loads(source))  # an inline JSON array


def _inputs(np: Any, pairs: list[str], inputs_file: Path | None) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    if inputs_file is not None:
        if inputs_file.suffix == ".npz":
            with np.load(inputs_file, allow_pickle=False) as npz:
                arrays.update({name: npz[name] for name in npz.files})
        else:
            doc = json.loads(inputs_file.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise typer.BadParameter("--inputs JSON must be an object: name → array")
            arrays.update({name: np.asarray(value) for name, value in doc.items()})
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--input {pair!r}: write NAME=FILE.npy|FILE.json|[...]")
        arrays[name] = _load_array(np, source)
    if not arrays:
        raise typer.BadParameter("give --input NAME=FILE (or --inputs FILE)")
    return arrays


def _cast_to_signature(np: Any, arrays: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """JSON numbers arrive as int64/float64: cast each input to the model's declared type."""
    declared = {i["name"]: i["datatype"] for i in meta.get("inputs", ())}
    cast: dict[str, Any] = {}
    for name, array in arrays.items():
        datatype = declared.get(name)
        if datatype in DATATYPES:
            array = array.astype(np.dtype(DATATYPES[datatype]), copy=False)
        elif datatype == "BYTES":
            array = array.astype(object)
        cast[name] = array
    return cast


@app.command()
def infer(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model's handle.")],
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="NAME=FILE.npy, NAME=FILE.json or NAME='[[1,2]]'."),
    ] = None,
    inputs_file: Annotated[
        Path | None, typer.Option("--inputs", help="A JSON object or .npz of all inputs.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Default: the latest.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Save outputs as .npz or .json.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a model on .npy/JSON inputs; print or save the outputs."""
    try:
        import numpy as np
    except ImportError:
        err.print("infer needs numpy: pip install 'citybrain-sdk[cli]'")
        raise typer.Exit(1) from None
    arrays = _inputs(np, list(input_ or ()), inputs_file)

    def run(cb: Client) -> InferResult:
        typed = _cast_to_signature(np, arrays, cb.models.metadata(model, version=version))
        return cb.models.infer(model, typed, version=version)

    result = ask(ctx, run, handle=model)
    as_lists = {
        name: {"datatype": str(a.dtype), "shape": list(a.shape), "data": a.tolist()}
        for name, a in result.items()
    }
    if output is not None:
        if output.suffix == ".npz":
            np.savez(output, **dict(result.items()))
        else:
            output.write_text(json.dumps(as_lists), encoding="utf-8")
        err.print(f"wrote {', '.join(result)} to {output}")
    if as_json:
        print_json({"model": result.model_name, "version": result.model_version, **as_lists})
        return
    if output is None:
        for name, array in result.items():
            out.print(f"{name} {array.dtype} {list(array.shape)}", markup=False)
            out.print(np.array2string(array, threshold=200), markup=False)


# --------------------------------------------------------------------------- transfers


@models_app.command("push")
def models_push(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The model product (create it first).")],
    artifact: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    manifest: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The manifest JSON.")],
    notes: Annotated[str, typer.Option(help="Release notes.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Upload a model artifact as a new version (progress bar)."""
    version = move(
        ctx,
        f"uploading {artifact.name}",
        lambda cb, progress: cb.models.push(
            handle, artifact, manifest, notes=notes, progress=progress
        ),
        handle=handle,
    )
    reply(
        version,
        as_json,
        lambda v: out.print(f"{handle} version {v.version}: {v.artifact_digest}", markup=False),
    )


@models_app.command("pull")
def models_pull(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The model product.")],
    dest: Annotated[Path, typer.Argument(help="A file or a folder.")] = Path("."),
    version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
) -> None:
    """Download a model version's artifact, digest-checked (progress bar)."""
    _download(
        ctx, handle, lambda cb, bar: cb.models.pull(handle, dest, version=version, progress=bar)
    )


@datasets_app.command("push")
def datasets_push(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The dataset product (create it first).")],
    data: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    schema: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The schema JSON.")],
    as_json: JsonOpt = False,
) -> None:
    """Upload CSV, Parquet or JSON Lines as a new dataset version (progress bar)."""
    version = move(
        ctx,
        f"uploading {data.name}",
        lambda cb, progress: cb.datasets.push(handle, data, schema=schema, progress=progress),
        handle=handle,
    )
    reply(
        version,
        as_json,
        lambda v: out.print(
            f"{handle} version {v.version}: {v.rows} rows, quality "
            f"{(v.quality or {}).get('score')}",
            markup=False,
        ),
    )


@datasets_app.command("download")
def datasets_download(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The dataset.")],
    dest: Annotated[Path, typer.Argument(help="A file or a folder.")] = Path("."),
    version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or jsonl.")] = "parquet",
) -> None:
    """Download a whole dataset version (progress bar)."""
    _download(
        ctx,
        handle,
        lambda cb, bar: cb.datasets.download(
            handle, dest, version=version, format=fmt, progress=bar
        ),
    )


def _download(ctx: typer.Context, handle: str, fn: Callable[[Client, Progress], Path]) -> None:
    """Run a download with a progress bar and print the path written."""
    out.print(str(move(ctx, f"downloading {handle}", fn, handle=handle)), markup=False)
