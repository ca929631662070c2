"""``citybrain models``: push and pull model versions through the platform's HTTP API.

Unlike the other groups these talk to a running platform (``--url``, ``--api-key``), never to
the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    no_args_is_help=True, help="Model versions (artifact + manifest) through the platform's API."
)


def _http_client(url: str, api_key: str | None) -> Any:
    """The HTTP client the ``models`` commands talk to the platform with (tests replace it)."""
    return api_client(url, api_key, key_required=False)


def push_model(
    client: Any,
    handle: str,
    artifact: Path,
    manifest_text: str,
    *,
    notes: str = "",
    progress: Any = None,
) -> Any:
    """Hash the artifact, then stream it with its manifest; returns the HTTP response."""
    import hashlib

    from marketplace.gateway.constants import ARTIFACT_DIGEST_HEADER, MODEL_MANIFEST_HEADER

    size = artifact.stat().st_size
    chunk_size = 1 << 20
    hasher = hashlib.sha256()
    task = progress.add_task("hashing", total=size) if progress else None
    with artifact.open("rb") as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            if progress:
                progress.advance(task, len(chunk))
    upload = progress.add_task("uploading", total=size) if progress else None

    def body() -> Any:
        with artifact.open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk
                if progress:
                    progress.advance(upload, len(chunk))

    # ASCII JSON: a header carries Latin-1 only, and model cards may be in any language.
    headers = {}
    if manifest_text:
        headers[MODEL_MANIFEST_HEADER] = json.dumps(
            json.loads(manifest_text), separators=(",", ":")
        )
    # A BentoML archive goes to the importer, which reads its manifest from the archive.
    route = "bentoml" if artifact.suffix == ".bentomodel" else "model"
    return client.post(
        f"/api/v1/products/{handle}/versions/{route}",
        content=body(),
        params={"notes": notes} if notes else None,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            **headers,
            ARTIFACT_DIGEST_HEADER: f"sha256:{hasher.hexdigest()}",
        },
    )


@app.command("push")
def models_push(
    handle: Annotated[str, typer.Argument(help="The model product, <tenant-slug>.<name>")],
    artifact: Annotated[
        Path,
        typer.Argument(
            help="The artifact file, or a BentoML archive (.bentomodel)",
            exists=True,
            dir_okay=False,
        ),
    ],
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="The manifest (JSON file); for a .bentomodel, optional fields that override "
            "what the archive says",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    notes: Annotated[str, typer.Option(help="Release notes of the version")] = "",
) -> None:
    """Upload a model version (artifact + manifest, or a .bentomodel) with a progress bar."""
    if not api_key:
        fail("an API key is needed", "pass --api-key or set CITYBRAIN_API_KEY")
    if manifest is None and artifact.suffix != ".bentomodel":
        fail("a manifest is needed", "pass --manifest manifest.json (or push a .bentomodel)")
    manifest_text = "" if manifest is None else read_json_text(manifest)
    with _http_client(url, api_key) as client, upload_progress() as progress:
        r = push_model(client, handle, artifact, manifest_text, notes=notes, progress=progress)
    if r.status_code != 201:
        fail(
            f"upload refused: {api_error(r)}",
            "check the manifest against the artifact (`citybrain models push --help`)",
        )
    v = r.json()
    console.print(f"{handle} version {v['version']} stored: {v['artifact_digest']}", soft_wrap=True)


@app.command("pull")
def models_pull(
    handle: Annotated[str, typer.Argument(help="The model product, <tenant-slug>.<name>")],
    version: Annotated[int, typer.Argument(help="The version")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the artifact")],
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Download a model version's artifact (checked against its digest)."""
    import hashlib

    from marketplace.gateway.constants import ARTIFACT_DIGEST_HEADER

    hasher = hashlib.sha256()
    with _http_client(url, api_key) as client:
        tmp, headers = download_part(
            client,
            f"/api/v1/products/{handle}/versions/{version}/artifact",
            output,
            on_chunk=hasher.update,
        )
    digest = headers.get(ARTIFACT_DIGEST_HEADER)
    if digest != f"sha256:{hasher.hexdigest()}":
        tmp.unlink(missing_ok=True)
        fail("the download does not match its digest; try again")
    tmp.replace(output)
    console.print(f"{handle} version {version} written to {output} ({digest})", soft_wrap=True)
