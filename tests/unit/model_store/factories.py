"""Factories for tiny model artifacts (reused by the gateway tests).

Both doubling models double their FP32 input ``x`` into the FP32 output ``y``; shapes are
``[-1, -1]`` (batch first) and they are batched with ``max_batch_size`` 8. The hostile model
(python format, unbatched) tries to escape its sandbox in the ways :class:`Hostile` lists.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from model_store.formats.torchscript import save_torchscript
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec

__all__ = [
    "DOUBLER_SOURCE",
    "HOSTILE_SOURCE",
    "Hostile",
    "doubler_manifest",
    "hostile_manifest",
    "make_hostile_model",
    "make_python_model",
    "make_torchscript_model",
    "sandbox_confines",
]

DOUBLER_SOURCE = '''
import numpy as np


class Doubler:
    """Doubles x into y."""

    def load(self):
        self.factor = np.float32(2.0)

    def predict(self, inputs):
        return {"y": (inputs["x"] * self.factor).astype(np.float32)}
'''


class _Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def doubler_manifest(
    fmt: str = "torchscript", *, entrypoint: str | None = None, max_batch_size: int = 8
) -> ModelManifest:
    """Return the manifest of the doubling model in the given format."""
    shape = [-1, -1]
    return ModelManifest.model_validate(
        {
            "format": fmt,
            "inputs": [TensorSpec(name="x", datatype="FP32", shape=shape)],
            "outputs": [TensorSpec(name="y", datatype="FP32", shape=shape)],
            "batching": BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_ms=2.0),
            "model_card": "# Doubler\n\nDoubles `x` into `y`.",
            "entrypoint": entrypoint,
        }
    )


def make_torchscript_model(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """Write a TorchScript doubling model; return its path and manifest."""
    path = save_torchscript(_Doubler(), Path(tmp_path) / "doubler.pt")
    return path, doubler_manifest("torchscript")


def write_python_zip(path: Path, files: dict[str, str]) -> Path:
    """Write a zip holding the given ``{archive name: source}`` files."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in files.items():
            archive.writestr(name, source)
    return path


def make_python_model(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """Write a python-format doubling model (``doubler:Doubler``); return path and manifest."""
    path = write_python_zip(Path(tmp_path) / "doubler.zip", {"doubler.py": DOUBLER_SOURCE})
    return path, doubler_manifest("python", entrypoint="doubler:Doubler")


HOSTILE_SOURCE = r'''
"""A hostile model: its int32 input 'mode' says what it tries (factories.Hostile)."""
import ctypes
import json
import os
import socket
import stat
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _probe():
    with open(os.path.join(HERE, "targets.json")) as f:
        targets = json.load(f)
    report = {
        "pid": os.getpid(),
        "env": sorted(
            k for k in os.environ if k.startswith(("CITYBRAIN", "DATABASE")) or "SECRET" in k
        ),
        "files": {},
        "open_files": [],
    }
    for name, path in targets.items():
        try:
            with open(path, "rb") as f:
                report["files"][name] = f.read(16).hex()
        except OSError as e:
            report["files"][name] = type(e).__name__
    for fd in range(3, 256):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            report["open_files"].append([st.st_dev, st.st_ino])
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=5).close()
        report["postgres"] = "connected"
    except Exception as e:
        report["postgres"] = type(e).__name__
    children = 0
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        children += 1
    report["children"] = children
    return report


class M:
    def predict(self, inputs):
        mode = int(inputs["mode"].reshape(-1)[0])
        if mode == 1:  # allocate without bound
            hoard = []
            while True:
                hoard.append(np.empty(1 << 24))
        if mode == 2:  # never answer
            while True:
                time.sleep(3600)
        if mode == 3:  # crash
            ctypes.string_at(0)
        if mode == 4:
            raise RuntimeError("the model failed on purpose")
        if mode == 5:  # write garbage where the gateway reads replies
            for fd in range(3, 64):
                try:
                    if stat.S_ISSOCK(os.fstat(fd).st_mode):
                        os.write(fd, b"NOT A FRAME" * 4)
                except OSError:
                    pass
            time.sleep(3600)
        rows = inputs["mode"].shape[0]
        if mode == 6:
            return {"report": np.array([b"ok"] * rows, dtype=object)}
        report = json.dumps(_probe()).encode()
        return {"report": np.array([report] * rows, dtype=object)}
'''


class Hostile:
    """The modes of :data:`HOSTILE_SOURCE` (its ``mode`` input)."""

    PROBE = 0  # reports env vars, the target files it could read, open files, 5432, forks
    HOARD = 1
    SLEEP = 2
    CRASH = 3
    RAISE = 4
    GARBLE = 5
    ECHO = 6  # answers b"ok", and nothing else


def hostile_manifest() -> ModelManifest:
    """The hostile model's manifest: ``mode`` INT32 [-1] in, ``report`` BYTES [-1] out."""
    return ModelManifest.model_validate(
        {
            "format": "python",
            "entrypoint": "hostile:M",
            "inputs": [{"name": "mode", "datatype": "INT32", "shape": [-1]}],
            "outputs": [{"name": "report", "datatype": "BYTES", "shape": [-1]}],
        }
    )


def make_hostile_model(tmp_path: Path, targets: dict[str, str]) -> tuple[Path, ModelManifest]:
    """Write the hostile model, telling it which files to try to read (name → path)."""
    path = write_python_zip(
        Path(tmp_path) / "hostile.zip",
        {"hostile.py": HOSTILE_SOURCE, "targets.json": json.dumps(targets)},
    )
    return path, hostile_manifest()


def sandbox_confines(tmp_path: Path) -> bool:
    """Whether sandbox workers get namespaces and a user of their own here (root on Linux)."""
    from model_store.sandbox import SandboxedModel

    path, manifest = make_python_model(tmp_path)
    model = SandboxedModel(manifest, path, name="probe")
    try:
        return {"filesystem", "network", "processes", "user"} <= set(model.info.isolation)
    finally:
        model.close()
