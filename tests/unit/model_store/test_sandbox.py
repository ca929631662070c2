"""Tenant code in sandbox workers: what a hostile model cannot do, and what the caller sees.

The hostile model (``factories.HOSTILE_SOURCE``) reads the environment, tries to read the
database file and the gateway's environment, lists its open files, connects to PostgreSQL on
127.0.0.1:5432 (which runs on the test machine), forks, allocates without bound, sleeps
forever, crashes and garbles its replies. Confinement by namespaces needs root; those tests
are skipped elsewhere (the sandbox then documents what is missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.errors import (
    InferenceFailedError,
    InvalidArtifactError,
    ModelUnavailableError,
)
from model_store.formats.python import PythonModel
from model_store.runtimes.embedded import EmbeddedRuntime
from model_store.sandbox import (
    Isolation,
    ModelCodeError,
    SandboxConfig,
    SandboxedModel,
    client,
    protocol,
)
from model_store.sandbox.gate import TenantCodeGate
from model_store.validation import validate_model
from tests.unit.model_store.factories import (
    Hostile,
    doubler_manifest,
    make_hostile_model,
    make_python_model,
    make_torchscript_model,
    sandbox_confines,
    write_python_zip,
)

CONFIG = SandboxConfig(
    memory_bytes=768 << 20, call_timeout_s=5.0, load_timeout_s=60.0, max_processes=16
)


def _mode(mode: int) -> dict[str, np.ndarray[Any, Any]]:
    return {"mode": np.array([mode], dtype=np.int32)}


def _report(model: SandboxedModel) -> dict[str, Any]:
    out = model.predict(_mode(Hostile.PROBE))["report"]
    report: dict[str, Any] = json.loads(out[0])
    return report


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether workers get namespaces here (root on Linux with CAP_SYS_ADMIN)."""
    return sandbox_confines(tmp_path_factory.mktemp("probe"))


@pytest.fixture
def database(tmp_path: Path) -> Any:
    """A SQLite database this process keeps open, as the gateway does."""
    path = tmp_path / "citybrain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE secret (v TEXT)")
    conn.execute("INSERT INTO secret VALUES ('every tenant''s rows')")
    conn.commit()
    yield path, conn
    conn.close()


def test_a_well_behaved_model_answers_through_its_worker(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    model = SandboxedModel(manifest, path, CONFIG, name="acme.doubler:1")
    try:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(model.predict({"x": x})["y"], x * 2)
        assert model.info.pid != os.getpid()
    finally:
        model.close()
    with pytest.raises(ModelUnavailableError, match="unloaded"):
        model.predict({"x": x})


def test_hostile_model_gets_none_of_what_it_wants(
    tmp_path: Path, database: Any, monkeypatch: pytest.MonkeyPatch, confined: bool
) -> None:
    if not confined:
        pytest.skip("needs root and Linux namespaces")
    db_path, conn = database
    monkeypatch.setenv("CITYBRAIN_DATABASE_URL", f"sqlite:///{db_path}")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/citybrain")
    monkeypatch.setenv("CITYBRAIN_STRIPE__API_KEY", "sk_test_SECRET")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    targets = {
        "database": str(db_path),
        "gateway_environ": f"/proc/{os.getpid()}/environ",
        "secret": str(secret),
        "passwords": "/etc/shadow",
    }
    path, manifest = make_hostile_model(tmp_path, targets)
    model = SandboxedModel(manifest, path, CONFIG, name="parkeasy.hostile:1")
    try:
        report = _report(model)
        uid = model.info.uid
    finally:
        model.close()
    assert report["env"] == []
    assert set(report["files"]) == set(targets)
    assert set(report["files"].values()) <= {"FileNotFoundError", "PermissionError"}
    st = db_path.stat()
    assert [st.st_dev, st.st_ino] not in report["open_files"]
    assert report["postgres"] != "connected"
    assert 0 < report["children"] < CONFIG.max_processes
    assert uid not in (0, os.getuid())
    # Everything it forked died with it, and this process's database is unharmed.
    assert _processes_of(uid) == []
    assert conn.execute("SELECT count(*) FROM secret").fetchone() == (1,)


def test_without_namespaces_the_environment_and_descriptors_stay_clean(
    tmp_path: Path, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path, _ = database
    monkeypatch.setenv("CITYBRAIN_DATABASE_URL", f"sqlite:///{db_path}")
    path, manifest = make_hostile_model(tmp_path, {})
    config = SandboxConfig(
        memory_bytes=CONFIG.memory_bytes, call_timeout_s=30.0, max_processes=8, namespaces=False
    )
    model = SandboxedModel(manifest, path, config, name="parkeasy.hostile:1")
    try:
        report = _report(model)
        info = model.info
    finally:
        model.close()
    assert report["env"] == []
    st = db_path.stat()
    assert [st.st_dev, st.st_ino] not in report["open_files"]
    assert "network" not in info.isolation and info.without == "disabled by configuration"
    assert report["children"] > 0
    if info.uid != os.getuid():  # root: a user of its own, so its processes can be counted
        # What it forked was killed with its process group (SIGKILL lands a moment later).
        deadline = time.monotonic() + 30.0
        while _processes_of(info.uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_of(info.uid) == []


def test_a_sandbox_that_must_have_namespaces_refuses_without_them(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    config = SandboxConfig(namespaces=False, require_namespaces=True)
    with pytest.raises(ModelUnavailableError, match="cannot run isolated"):
        SandboxedModel(manifest, path, config, name="acme.doubler:1")


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        (Hostile.HOARD, "ran out of memory"),
        (Hostile.SLEEP, "did not answer within 5 s"),
        (Hostile.CRASH, "SIGSEGV"),
        (Hostile.GARBLE, "malformed reply"),
    ],
    ids=["unbounded-allocation", "sleeps-forever", "crash", "garbled-reply"],
)
def test_a_failing_worker_fails_the_call_with_503_and_the_next_call_restarts_it(
    tmp_path: Path, mode: int, match: str
) -> None:
    path, manifest = make_hostile_model(tmp_path, {})
    model = SandboxedModel(manifest, path, CONFIG, name="parkeasy.hostile:1")
    try:
        first = model.info.pid
        with pytest.raises(ModelUnavailableError, match=match) as caught:
            model.predict(_mode(mode))
        assert caught.value.status == 503
        assert model.predict(_mode(Hostile.ECHO))["report"].tolist() == [b"ok"]
        assert model.info.pid != first
    finally:
        model.close()


def test_a_model_that_keeps_failing_is_restarted_only_after_a_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, manifest = make_hostile_model(tmp_path, {})
    model = SandboxedModel(manifest, path, CONFIG, name="parkeasy.hostile:1")
    monkeypatch.setattr(client, "_now", lambda: 1000.0)  # the clock stands still
    try:
        for _ in range(3):  # two restarts come at once...
            with pytest.raises(ModelUnavailableError, match="SIGSEGV"):
                model.predict(_mode(Hostile.CRASH))
        last = model.info.pid
        with pytest.raises(ModelUnavailableError, match="keeps failing") as caught:
            model.predict(_mode(Hostile.ECHO))
        assert caught.value.headers == {"Retry-After": "1"}
        assert model.info.pid == last  # ...the next waits, starting nothing meanwhile
        monkeypatch.setattr(client, "_now", lambda: 1001.0)
        assert model.predict(_mode(Hostile.ECHO))["report"].tolist() == [b"ok"]
    finally:
        model.close()


def test_an_exception_in_the_model_is_reported_and_its_worker_lives_on(tmp_path: Path) -> None:
    path, manifest = make_hostile_model(tmp_path, {})
    model = SandboxedModel(manifest, path, CONFIG, name="parkeasy.hostile:1")
    try:
        first = model.info.pid
        with pytest.raises(ModelCodeError, match="RuntimeError: the model failed on purpose"):
            model.predict(_mode(Hostile.RAISE))
        assert model.predict(_mode(Hostile.ECHO))["report"].tolist() == [b"ok"]
        assert model.info.pid == first
    finally:
        model.close()


def test_the_runtime_keeps_serving_other_models_while_one_fails(tmp_path: Path) -> None:
    hostile, hostile_manifest = make_hostile_model(tmp_path, {})
    doubler, doubler_manifest_ = make_torchscript_model(tmp_path)
    x = np.ones((1, 4), dtype=np.float32)

    async def scenario() -> None:
        runtime = EmbeddedRuntime(isolation=Isolation(CONFIG))
        runtime.register("parkeasy.hostile:1", hostile_manifest, hostile)
        runtime.register("acme.doubler:1", doubler_manifest_, doubler)
        try:
            for mode in (Hostile.HOARD, Hostile.SLEEP, Hostile.CRASH):
                with pytest.raises(ModelUnavailableError):
                    await runtime.infer("parkeasy.hostile:1", _mode(mode))
                out = await runtime.infer("acme.doubler:1", {"x": x})
                np.testing.assert_array_equal(out["y"], x * 2)
                out = await runtime.infer("parkeasy.hostile:1", _mode(Hostile.ECHO))
                assert out["report"].tolist() == [b"ok"]
            with pytest.raises(InferenceFailedError):
                await runtime.infer("parkeasy.hostile:1", _mode(Hostile.RAISE))
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_only_trusted_keys_run_tenant_code_in_process(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    ts_path, ts_manifest = make_torchscript_model(tmp_path)

    def broken(_key: str) -> bool:
        raise RuntimeError("database down")

    isolation = Isolation(CONFIG, trusted=lambda key: key == "traffic-police.m:1")
    trusted = isolation.load("traffic-police.m:1", manifest, path)
    untrusted = isolation.load("parkeasy.m:1", manifest, path)
    failing = Isolation(CONFIG, trusted=broken).load("traffic-police.m:1", manifest, path)
    torchscript = isolation.load("parkeasy.t:1", ts_manifest, ts_path)
    try:
        assert isinstance(trusted, PythonModel)
        assert isinstance(untrusted, SandboxedModel) and isinstance(failing, SandboxedModel)
        assert not isinstance(torchscript, SandboxedModel | PythonModel)
    finally:
        for model in (trusted, untrusted, failing, torchscript):
            model.close()


def test_validation_of_a_model_that_crashes_on_import_names_the_crash(tmp_path: Path) -> None:
    path = write_python_zip(tmp_path / "m.zip", {"m.py": "import os\nos._exit(3)\n"})
    manifest = doubler_manifest("python", entrypoint="m:M")
    with pytest.raises(InvalidArtifactError, match=r"^unloadable: .*exited.*exit status 3"):
        validate_model(manifest, path, sandbox=CONFIG)


def test_validation_of_a_model_that_raises_on_import_names_the_exception(tmp_path: Path) -> None:
    path = write_python_zip(tmp_path / "m.zip", {"m.py": "X = 1 / 0\n"})
    manifest = doubler_manifest("python", entrypoint="m:M")
    with pytest.raises(InvalidArtifactError, match=r"^unloadable: ZeroDivisionError"):
        validate_model(manifest, path, sandbox=CONFIG)


def test_validation_of_a_model_that_never_loads_times_out(tmp_path: Path) -> None:
    source = (
        "import time\n"
        "class M:\n"
        "    def load(self):\n"
        "        time.sleep(3600)\n"
        "    def predict(self, inputs):\n"
        "        return inputs\n"
    )
    path = write_python_zip(tmp_path / "m.zip", {"m.py": source})
    manifest = doubler_manifest("python", entrypoint="m:M")
    config = SandboxConfig(load_timeout_s=3.0)
    with pytest.raises(InvalidArtifactError, match="did not answer within 3 s"):
        validate_model(manifest, path, sandbox=config)


def test_a_runtime_that_cannot_confine_code_refuses_untrusted_python(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    ts_path, ts_manifest = make_torchscript_model(tmp_path)
    x = np.ones((1, 2), dtype=np.float32)

    async def scenario() -> None:
        inner = EmbeddedRuntime(isolation=Isolation(CONFIG, trusted=lambda _key: True))
        gate = TenantCodeGate(inner, lambda key: key.startswith("traffic-police."), name="triton")
        try:
            with pytest.raises(ModelUnavailableError, match="not trusted"):
                await gate.load("parkeasy.m:1", manifest, path)
            assert not gate.is_ready("parkeasy.m:1")
            with pytest.raises(ModelUnavailableError, match="not trusted"):
                await gate.infer("parkeasy.m:1", {"x": x})
            await gate.load("traffic-police.m:1", manifest, path)
            await gate.load("parkeasy.t:1", ts_manifest, ts_path)
            assert (await gate.infer("traffic-police.m:1", {"x": x}))["y"].tolist() == [[2, 2]]
            assert (await gate.infer("parkeasy.t:1", {"x": x}))["y"].tolist() == [[2, 2]]
        finally:
            await gate.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- the wire


def test_tensors_of_every_datatype_cross_the_wire_unchanged() -> None:
    tensors = {
        "bool": np.array([True, False]),
        "u8": np.arange(4, dtype=np.uint8).reshape(2, 2),
        "i64": np.array([-(2**63), 2**63 - 1]),
        "f16": np.array([0.5, -2.0], dtype=np.float16),
        "f64": np.array(3.25),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
        "bytes": np.array([b"a", "城市", b""], dtype=object),
    }
    left, right = socket.socketpair()
    with left, right:
        protocol.send(left, "result", {"cpu_s": 1.5}, tensors)
        message = protocol.recv(right, max_payload=1 << 20)
    assert message.op == "result" and message.header["cpu_s"] == 1.5
    assert message.tensors["bytes"].tolist() == [b"a", "城市".encode(), b""]
    for name, array in tensors.items():
        if name != "bytes":
            got = message.tensors[name]
            assert got.dtype == array.dtype and got.shape == array.shape
            np.testing.assert_array_equal(got, array)


def _frame(header: object, payload: bytes = b"", *, magic: bytes = b"CBW1") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<4sIQ", magic, len(raw), len(payload)) + raw + payload


def _fp32(nbytes: int, shape: list[int]) -> dict[str, Any]:
    return {"name": "y", "datatype": "FP32", "shape": shape, "nbytes": nbytes}


@pytest.mark.parametrize(
    "frame",
    [
        _frame({"op": "result"}, magic=b"PICK"),
        _frame(b"\x80\x04not json"),
        _frame(["op"]),
        _frame({"op": "result", "tensors": [_fp32(8, [3])]}, b"\0" * 8),
        _frame({"op": "result", "tensors": [{**_fp32(8, [2]), "datatype": "OBJECT"}]}, b"\0" * 8),
        _frame({"op": "result", "tensors": [_fp32(8, [-2])]}, b"\0" * 8),
        _frame({"op": "result", "tensors": [_fp32(4, [1])]}, b"\0" * 8),
        _frame(
            {
                "op": "result",
                "tensors": [{"name": "s", "datatype": "BYTES", "shape": [1], "nbytes": 6}],
            },
            struct.pack("<I", 9) + b"ab",
        ),
        struct.pack("<4sIQ", b"CBW1", protocol.MAX_HEADER_BYTES + 1, 0),
        struct.pack("<4sIQ", b"CBW1", 2, 1 << 40) + b"{}",
        _frame({"op": "result", "tensors": [_fp32(8, [2])]}, b"\0" * 3),
    ],
    ids=[
        "magic",
        "not-json",
        "not-an-object",
        "size-vs-shape",
        "datatype",
        "negative-dim",
        "sizes-vs-payload",
        "bytes-truncated",
        "header-too-large",
        "payload-too-large",
        "closed-mid-message",
    ],
)
def test_malformed_replies_are_refused_before_anything_is_built(frame: bytes) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frame)
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(protocol.ProtocolError):
            protocol.recv(right, max_payload=1 << 20)
