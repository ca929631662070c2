"""``examples/hotline_pipeline.py`` against a stand-in v2 gateway serving the real built models.

The stand-in speaks the same wire format as the platform (it decodes and encodes with
:mod:`model_store.v2`) and checks the bearer key, so this proves the example's requests — the
binary tensor extension for audio, JSON BYTES for text — and its parsing of the answers.
Needs ``espeak-ng`` (fails without it, like the hotline-asr tests).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from model_store.builtin import complaint_router, hotline_asr
from model_store.errors import ModelStoreError
from model_store.formats import LoadedModel, load_model
from model_store.manifest import ModelManifest
from model_store.v2 import HEADER_CONTENT_LENGTH, check_inputs, decode_request, encode_response

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hotline_pipeline.py"
KEY = "cbk_test_secret"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hotline_pipeline_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: `apt-get install -y espeak-ng` (make test does)")
    tmp = tmp_path_factory.mktemp("gateway")
    models: dict[str, tuple[ModelManifest, LoadedModel]] = {}
    for name, builder in (
        (hotline_asr.NAME, hotline_asr),
        (complaint_router.NAME, complaint_router),
    ):
        path, manifest = builder.build(tmp / name)
        models[name] = (manifest, load_model(manifest, path))
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            parts = self.path.strip("/").split("/")
            if parts[:2] != ["v2", "models"] or parts[3:] != ["infer"] or parts[2] not in models:
                self._send(404, b'{"error":"not found"}', {"Content-Type": "application/json"})
                return
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                self._send(401, b'{"error":"bad key"}', {"Content-Type": "application/json"})
                return
            assert self.headers.get("Idempotency-Key")
            manifest, model = models[parts[2]]
            length = self.headers.get(HEADER_CONTENT_LENGTH)
            try:
                request = decode_request(body, int(length) if length else None)
                outputs = model.predict(check_inputs(request, manifest.inputs))
                payload, headers = encode_response(parts[2], None, outputs, request)
            except ModelStoreError as e:
                self._send(e.status, f'{{"error":"{e.message}"}}'.encode(), {})
                return
            calls.append(parts[2])
            self._send(200, payload, headers)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()
    for _, model in models.values():
        model.close()


def test_call_is_transcribed_and_routed(
    gateway: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, calls = gateway
    [wav] = hotline_asr.synthesize(
        ["The factory next to the river is pouring dirty water into it every night."], tmp_path
    )
    example = _example()
    assert example.main([str(wav), "--url", url, "--key", KEY]) == 0
    out = capsys.readouterr().out
    assert "department: environment" in out
    transcript = next(line for line in out.splitlines() if line.startswith("transcript:"))
    assert "factory" in transcript.lower()
    assert calls[-2:] == [hotline_asr.NAME, complaint_router.NAME]


def test_refused_key_is_reported(
    gateway: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = gateway
    [wav] = hotline_asr.synthesize(["Hello."], tmp_path)
    assert _example().main([str(wav), "--url", url, "--key", "cbk_wrong"]) == 1
    assert "refused" in capsys.readouterr().err
