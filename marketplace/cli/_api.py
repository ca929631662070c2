"""What the command groups that talk to a running platform over HTTP share (``datasets``,
``models``): the ``--url``/``--api-key`` options, the client, the error line, the JSON file
check, the upload progress bar and the download to a ``.part`` file.

``httpx`` and ``rich.progress`` are imported when used, so the other groups start without them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from marketplace.cli._common import err, fail

ApiUrl = Annotated[
    str, typer.Option("--url", envvar="CITYBRAIN_API_URL", help="The platform's base URL")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="CITYBRAIN_API_KEY", help="An API key")
]


def api_client(url: str, api_key: str | None, *, key_required: bool = True) -> Any:
    """An ``httpx.Client`` on the platform at ``url``, authenticated with ``api_key``.

    Without a key it fails (exit 1, naming the option) when ``key_required``, else it asks as
    the anonymous caller.
    """
    import httpx

    if key_required and not api_key:
        fail("an API key is needed", "pass --api-key or set CITYBRAIN_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=600.0))


def api_error(r: Any) -> str:
    """The status, code and message of an error response, in one line."""
    try:
        body = r.json()
        return f"{r.status_code} {body.get('code', '')}: {body.get('error', r.text)}"
    except ValueError:
        return f"{r.status_code}: {r.text[:200]}"


def read_json_text(path: Path) -> str:
    """The text of a JSON file, checked to parse (else fail, naming the file)."""
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
    except ValueError as e:
        fail(f"{path} is not JSON: {e}")
    return text


def upload_progress() -> Any:
    """A ``rich`` progress display on stderr with a bar, bytes sent and speed."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    return Progress(*columns, console=err)


def download_part(
    client: Any,
    path: str,
    output: Path,
    *,
    params: dict[str, str] | None = None,
    on_chunk: Callable[[bytes], object] | None = None,
) -> tuple[Path, Any]:
    """Stream ``GET path`` to ``output`` + ``.part`` (fail on any status but 200).

    Returns:
        The ``.part`` file (the caller checks it and moves it onto ``output``) and the
        response's headers.
    """
    tmp = output.with_name(output.name + ".part")
    with client.stream("GET", path, params=params) as r:
        if r.status_code != 200:
            r.read()
            fail(f"download refused: {api_error(r)}")
        with tmp.open("wb") as f:
            for chunk in r.iter_bytes():
                if on_chunk is not None:
                    on_chunk(chunk)
                f.write(chunk)
        return tmp, r.headers
