"""Real-time factor of ``hotline-12345.hotline-asr``: in-process, and through the gateway.

Builds the artifact into a temporary folder, loads it the way the embedded runtime does
(``model_store.formats.load_model``), synthesises the builder's English hotline sentences with
espeak-ng (plus any extra WAV/FLAC/MP3 files given), warms up once, then transcribes each
recording ``--repeat`` times and prints audio seconds, processing seconds (median) and the
real-time factor (processing / audio).

Then the same recordings go **through the gateway**: a real server subprocess
(``citybrain serve`` on a temporary SQLite database and data folder), the model uploaded and
published through the API like any publisher's, and each recording sent with the stock
``tritonclient.http`` client (binary tensor extension, API key header, metered in
audio-seconds). The gateway's real-time factor counts the whole HTTP round trip (upload of the
audio, decoding, authentication, metering). Goal: overall RTF ≤ 0.15 on both paths.

    .venv/bin/python bench/asr.py [--repeat 3] [--no-gateway] [extra.wav ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_store.builtin.hotline_asr import (
    EVAL_SENTENCES,
    METER_OUTPUT,
    PRODUCT,
    manifest,
    synthesize,
    write_artifact,
)
from model_store.formats import load_model

GOAL = 0.15
ROOT = Path(__file__).resolve().parents[1]
HANDLE = f"{PRODUCT['owner']}.{PRODUCT['name']}"


@contextmanager
def gateway(tmp: Path, artifact: Path) -> Iterator[tuple[str, str]]:
    """A server subprocess with the ASR model uploaded and published; yields (url, API key)."""
    import httpx

    from tests.utils.city import migrate_and_seed
    from tests.utils.publish import publish_model
    from tests.utils.server import running_platform_server

    database_url = f"sqlite:///{tmp / 'citybrain.db'}"
    keys = migrate_and_seed(database_url).keys  # tenants and keys only: no model builds
    with running_platform_server(
        database_url=database_url, data_dir=tmp / "var", log=tmp / "server.log"
    ) as server:
        owner = {"Authorization": f"Bearer {keys[PRODUCT['owner']]}"}
        with httpx.Client(base_url=server.url, headers=owner, timeout=120) as api:
            publish_model(
                api,
                name=PRODUCT["name"],
                title=PRODUCT["title"],
                domain=PRODUCT["domain"],
                tier=PRODUCT["tier"],
                artifact=artifact.read_bytes(),
                manifest=manifest().model_dump(mode="json"),
            )
        yield server.url, keys["parkeasy"]


def via_gateway(
    url: str, key: str, recordings: list[Path], payloads: list[bytes], repeat: int
) -> float:
    """Transcribe each recording through the gateway; print rows; return the overall RTF."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=300)
    headers = {"Authorization": f"Bearer {key}"}

    def call(audio: bytes) -> tuple[str, float]:
        tensor = httpclient.InferInput("audio", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([audio], dtype=np.object_), binary_data=True)
        outputs = [
            httpclient.InferRequestedOutput(n, binary_data=False)
            for n in ("transcript", METER_OUTPUT)
        ]
        result = client.infer(HANDLE, [tensor], outputs=outputs, headers=headers)
        text = result.as_numpy("transcript").reshape(-1)[0]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        return text, float(result.as_numpy(METER_OUTPUT).reshape(-1)[0])

    try:
        call(payloads[0])  # warm-up: the gateway loads the model on its first call
        print(f"{'recording':<14}{'audio s':>9}{'proc s':>9}{'RTF':>8}  transcript (gateway)")
        total_audio = total_proc = 0.0
        for path, payload in zip(recordings, payloads, strict=True):
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                text, audio = call(payload)
                times.append(time.perf_counter() - t)
            proc = statistics.median(times)
            total_audio += audio
            total_proc += proc
            print(f"{path.name:<14}{audio:>9.2f}{proc:>9.3f}{proc / audio:>8.3f}  {text[:60]}")
    finally:
        client.close()
    return total_proc / total_audio


def main() -> int:
    parser = argparse.ArgumentParser(description="hotline-asr real-time factor")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per recording")
    parser.add_argument("--no-gateway", action="store_true", help="in-process only")
    parser.add_argument("files", nargs="*", type=Path, help="extra recordings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-asr-") as tmp:
        artifact = write_artifact(Path(tmp) / "hotline_asr.zip")
        t0 = time.perf_counter()
        model = load_model(manifest(), artifact)
        load_s = time.perf_counter() - t0
        recordings = [*synthesize(EVAL_SENTENCES, Path(tmp) / "wav"), *args.files]
        payloads = []
        for path in recordings:
            array = np.empty(1, dtype=np.object_)
            array[0] = path.read_bytes()
            payloads.append(array)
        model.predict({"audio": payloads[0]})  # warm-up
        print(
            f"hotline-asr in-process, {os.cpu_count()} CPUs, load {load_s:.2f} s, "
            f"median of {args.repeat} runs per recording"
        )
        print(f"{'recording':<14}{'audio s':>9}{'proc s':>9}{'RTF':>8}  transcript")
        total_audio = total_proc = 0.0
        for path, payload in zip(recordings, payloads, strict=True):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = model.predict({"audio": payload})
                times.append(time.perf_counter() - t)
            proc = statistics.median(times)
            audio = float(out[METER_OUTPUT][0])
            total_audio += audio
            total_proc += proc
            text = bytes(out["transcript"][0]).decode("utf-8")
            print(f"{path.name:<14}{audio:>9.2f}{proc:>9.3f}{proc / audio:>8.3f}  {text[:60]}")
        model.close()
        rtf = total_proc / total_audio
        print(
            f"{'overall':<14}{total_audio:>9.2f}{total_proc:>9.3f}{rtf:>8.3f}  "
            f"goal ≤ {GOAL} → {'met' if rtf <= GOAL else 'NOT met'}"
        )
        if args.no_gateway:
            return 0
        print("\nhotline-asr through the gateway (server subprocess, tritonclient.http, metered)")
        with gateway(Path(tmp), artifact) as (url, key):
            audio_bytes = [bytes(p[0]) for p in payloads]
            gateway_rtf = via_gateway(url, key, recordings, audio_bytes, args.repeat)
    print(
        f"{'overall':<14}{'':>9}{'':>9}{gateway_rtf:>8.3f}  "
        f"goal ≤ {GOAL} → {'met' if gateway_rtf <= GOAL else 'NOT met'}"
    )
    print(
        f"\nRTF in-process {rtf:.3f}, via the gateway {gateway_rtf:.3f} "
        f"(×{gateway_rtf / rtf:.2f}; +{(gateway_rtf - rtf) * 1000:.1f} ms per audio second)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
