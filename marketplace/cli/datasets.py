"""``citybrain datasets``: push data versions and pull downloads through the platform's HTTP API.

Like ``citybrain models`` these talk to a running platform (``--url``, ``--api-key``), never to
the database. ``push`` streams a CSV, Parquet or JSON Lines file with its schema (a JSON file)
as multipart, with a progress bar; the platform turns it into a Parquet snapshot and answers the
version (rows, sha256, quality). ``pull`` streams a version's data (the caller's masked view)
to a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Annotated, Any, Literal

import typer

from marketplace.cli._api import (
    ApiKey,
    ApiUrl,
    api_client,
    api_error,
    download_part,
    read_json_text,
    upload_progress,
)
from marketplace.cli._common import console, fail

app = typer.Typer(
    no_args_is_help=True, help="Dataset versions (data + schema) through the platform's API."
)

_MEDIA = {"csv": "text/csv", "parquet": "application/x-parquet", "jsonl": "application/x-ndjson"}

# The client the commands use (tests replace it with one on an in-process app).
_client = api_client


class _Counted:
    """A file whose reads advance a progress bar (httpx streams multipart files by reads)."""

    def __init__(self, f: IO[bytes], progress: Any, task: Any) -> None:
        self._f = f
        self._progress = progress
        self._task = task
        self.name = f.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._progress.advance(self._task, len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def push_dataset(
    client: Any,
    handle: str,
    data: Path,
    schema_text: str,
    *,
    fmt: str | None = None,
    notes: str = "",
    progress: Any = None,
) -> Any:
    """Stream ``data`` with its schema to ``POST .../versions/data``; returns the response."""
    fmt = fmt or data.suffix.lstrip(".").lower()
    form = {"schema": schema_text}
    if fmt:
        form["format"] = fmt
    with data.open("rb") as f:
        body: Any = f
        if progress is not None:
            task = progress.add_task("uploading", total=data.stat().st_size)
            body = _Counted(f, progress, task)
        return client.post(
            f"/api/v1/products/{handle}/versions/data",
            params={"notes": notes} if notes else None,
            data=form,
            files={"file": (data.name, body, _MEDIA.get(fmt, "application/octet-stream"))},
        )


@app.command("push")
def datasets_push(
    handle: Annotated[str, typer.Argument(help="The dataset product, <tenant-slug>.<name>")],
    data: Annotated[
        Path, typer.Argument(help="CSV, Parquet or JSON Lines", exists=True, dir_okay=False)
    ],
    schema: Annotated[
        Path,
        typer.Option(help="The schema: columns and quality rules (JSON)", exists=True),
    ],
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    format: Annotated[
        str | None, typer.Option(help="csv, parquet or jsonl (default: by extension)")
    ] = None,
    notes: Annotated[str, typer.Option(help="Release notes of the version")] = "",
) -> None:
    """Upload a data version (file + schema) with a progress bar."""
    schema_text = read_json_text(schema)
    with _client(url, api_key) as client, upload_progress() as progress:
        r = push_dataset(
            client, handle, data, schema_text, fmt=format, notes=notes, progress=progress
        )
    if r.status_code != 201:
        fail(
            f"upload refused: {api_error(r)}",
            "check the schema against the file (`citybrain datasets push --help`)",
        )
    v = r.json()
    quality = v.get("quality") or {}
    score = quality.get("score")
    console.print(
        f"{handle} version {v['version']}: {v['rows']} rows, sha256 {v['sha256']}, "
        f"quality {'n/a' if score is None else score}"
        + (" [red](blocked: a blocking rule failed)[/red]" if quality.get("blocked") else ""),
        soft_wrap=True,
    )


@app.command("pull")
def datasets_pull(
    handle: Annotated[str, typer.Argument(help="The dataset product, <tenant-slug>.<name>")],
    version: Annotated[int, typer.Argument(help="The version")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the data")],
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    format: Annotated[
        Literal["parquet", "csv", "jsonl"], typer.Option(help="parquet, csv or jsonl")
    ] = "parquet",
) -> None:
    """Download a version's data (what the key may see of it, masks applied)."""
    with _client(url, api_key) as client:
        tmp, headers = download_part(
            client,
            f"/api/v1/products/{handle}/versions/{version}/data",
            output,
            params={"format": format},
        )
    rows = headers.get("X-Row-Count", "?")
    tmp.replace(output)
    console.print(f"{handle} version {version}: {rows} rows written to {output}", soft_wrap=True)
