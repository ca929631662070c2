"""A "super application" on the CityBrain platform: a 12345 hotline call → transcript → department.

Sends an audio file through two models of the platform's gateway with the Open Inference
Protocol (v2), using the stock Triton HTTP client (``tritonclient.http``):

1. ``hotline-12345.hotline-asr`` — the recording goes as one BYTES element with the binary tensor
   extension (``Inference-Header-Content-Length``), so no base64 is needed; the answer holds the
   ``transcript``, time-stamped ``segments`` and ``audio_seconds`` (billed in audio-seconds);
2. ``hotline-12345.complaint-router`` — the transcript goes as a JSON BYTES string; the answer
   holds the ``department`` and its ``confidence`` (billed per call).

Each call carries ``Authorization: Bearer <key>`` and a fresh ``Idempotency-Key``, so a retried
request is billed once. Usage::

    .venv/bin/python examples/hotline_pipeline.py call.wav --key cbk_... \\
        [--url http://127.0.0.1:8000]

The key may come from ``CITYBRAIN_API_KEY`` instead. Any format FFmpeg decodes works (WAV, FLAC,
MP3, OGG…); English speech only (the ASR model is Whisper tiny.en).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ASR_MODEL = "hotline-12345.hotline-asr"
ROUTER_MODEL = "hotline-12345.complaint-router"


@dataclass(frozen=True, slots=True)
class Routed:
    """What the pipeline found out about one call."""

    transcript: str
    segments: list[dict[str, Any]]
    audio_seconds: float
    department: str
    confidence: float


def _client(url: str) -> httpclient.InferenceServerClient:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SystemExit(f"--url must look like http://host:port, got {url!r}")
    if parts.path not in ("", "/"):
        raise SystemExit("--url must be the gateway's base URL, without a path")
    return httpclient.InferenceServerClient(
        url=parts.netloc, ssl=parts.scheme == "https", network_timeout=300.0
    )


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def transcribe(
    client: httpclient.InferenceServerClient, key: str, audio: bytes
) -> tuple[str, list[dict[str, Any]], float]:
    """Call the hotline ASR model (one metered call, billed in audio-seconds).

    Args:
        client: A v2 HTTP client on the gateway.
        key: The API key.
        audio: The audio file's bytes.

    Returns:
        The transcript, its segments and the audio duration in seconds.
    """
    tensor = httpclient.InferInput("audio", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([audio], dtype=np.object_), binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=False)
        for name in ("transcript", "segments", "audio_seconds")
    ]
    result = client.infer(ASR_MODEL, [tensor], outputs=outputs, headers=_headers(key))
    transcript = _text(result.as_numpy("transcript").reshape(-1)[0])
    segments = json.loads(_text(result.as_numpy("segments").reshape(-1)[0]))
    seconds = float(result.as_numpy("audio_seconds").reshape(-1)[0])
    return transcript, segments, seconds


def route(client: httpclient.InferenceServerClient, key: str, text: str) -> tuple[str, float]:
    """Call the complaint router (one metered call).

    Args:
        client: A v2 HTTP client on the gateway.
        key: The API key.
        text: The complaint.

    Returns:
        The department and the model's confidence.
    """
    tensor = httpclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(
        np.array([text.encode("utf-8")], dtype=np.object_), binary_data=False
    )
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=False)
        for name in ("department", "confidence")
    ]
    result = client.infer(ROUTER_MODEL, [tensor], outputs=outputs, headers=_headers(key))
    department = _text(result.as_numpy("department").reshape(-1)[0])
    confidence = float(result.as_numpy("confidence").reshape(-1)[0])
    return department, confidence


def run(url: str, key: str, audio_path: Path) -> Routed:
    """Transcribe a call, then route its transcript.

    Args:
        url: The gateway's base URL.
        key: The API key.
        audio_path: The recording.

    Returns:
        The transcript and the department.
    """
    client = _client(url)
    try:
        transcript, segments, seconds = transcribe(client, key, audio_path.read_bytes())
        department, confidence = ("", 0.0)
        if transcript.strip():
            department, confidence = route(client, key, transcript)
    finally:
        client.close()
    return Routed(transcript, segments, seconds, department, confidence)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the pipeline, print the result.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("audio", type=Path, help="the call recording (WAV, FLAC, MP3…)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's base URL")
    parser.add_argument(
        "--key",
        default=os.environ.get("CITYBRAIN_API_KEY"),
        help="API key with the infer scope (default: $CITYBRAIN_API_KEY)",
    )
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an API key is needed: --key or CITYBRAIN_API_KEY")
    if not args.audio.is_file():
        parser.error(f"no such file: {args.audio}")
    try:
        routed = run(args.url, args.key, args.audio)
    except InferenceServerException as e:
        print(f"the gateway refused the call: {e.message()} (status {e.status()})", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot reach the gateway at {args.url}: {e}", file=sys.stderr)
        return 1
    print(f"audio:      {routed.audio_seconds:.1f} s (billed in audio-seconds)")
    print(f"transcript: {routed.transcript or '(no speech)'}")
    for segment in routed.segments:
        print(f"  [{segment['start']:6.2f} – {segment['end']:6.2f}] {segment['text']}")
    if routed.department:
        print(f"department: {routed.department} (confidence {routed.confidence:.2f})")
    else:
        print("department: (nothing to route)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
