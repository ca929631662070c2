"""Real-time factor of ``hotline-12345.hotline-asr`` in-process (no gateway).

Builds the artifact into a temporary folder, loads it the way the embedded runtime does
(``model_store.formats.load_model``), synthesises the builder's English hotline sentences with
espeak-ng (plus any extra WAV/FLAC/MP3 files given), warms up once, then transcribes each
recording ``--repeat`` times and prints audio seconds, processing seconds (median) and the
real-time factor (processing / audio). Goal: overall RTF ≤ 0.15.

    .venv/bin/python bench/asr.py [--repeat 3] [extra.wav ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model_store.builtin.hotline_asr import (
    EVAL_SENTENCES,
    METER_OUTPUT,
    manifest,
    synthesize,
    write_artifact,
)
from model_store.formats import load_model

GOAL = 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description="hotline-asr real-time factor, in-process")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per recording")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
