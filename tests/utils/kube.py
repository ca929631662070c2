"""A fake of the Kubernetes API's InferenceService endpoints, for the KServe runtime's tests.

No Kubernetes API server can run here (no cluster, no kube-apiserver binary), so this is a fake,
and a deliberate one: it serves exactly the endpoints ``KServeClient`` touches — the
CustomObjects paths of ``serving.kserve.io/v1beta1`` InferenceServices (create, get, JSON
merge-patch, delete) — over HTTP on 127.0.0.1 from a thread, with a kubeconfig pointing at it,
so the real ``kubernetes`` client code runs unchanged against it.

It can stand in for KServe's controller in two ways: ``auto_ready`` marks each new service
ready at its own URL, where it answers the v2 ``infer`` path as a predictor that doubles ``x``
into ``y``; or ``on_create`` hands each new object to the test, which may run the predictor the
object names and report it ready with :meth:`FakeKubeAPI.update_status`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from tests.utils.server import send_json

__all__ = ["FakeKubeAPI"]


_PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/?]+))?"
)
_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)/infer$")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


class FakeKubeAPI:
    """The InferenceService endpoints of an API server, plus a doubling v2 predictor."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.auto_ready = False
        self.predictor_status = 200
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                send_json(self, status, body)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _create(self, ns: str) -> dict[str, Any] | None:
                obj = self._body()
                key = (ns, obj["metadata"]["name"])
                with fake.lock:
                    if key in fake.objects:
                        self._status(
                            409, "AlreadyExists", f'inferenceservices "{key[1]}" already exists'
                        )
                        return None
                    obj["metadata"].update(
                        namespace=ns,
                        uid=f"uid-{len(fake.objects)}",
                        resourceVersion="1",
                        generation=1,
                    )
                    if fake.auto_ready:
                        fake.set_ready(obj, f"http://127.0.0.1:{fake.port}")
                    fake.objects[key] = obj
                    self._send(201, obj)
                    created: dict[str, Any] = copy.deepcopy(obj)
                    return created

            def _handle(self, method: str) -> None:
                with fake.lock:
                    fake.requests.append((method, self.path, self.headers.get("Content-Type")))
                infer = _INFER.match(self.path)
                if infer and method == "POST":
                    fake.answer_infer(self, self._body())
                    return
                match = _PATH.match(self.path)
                if match is None:
                    self._status(404, "NotFound", f"no route {self.path}")
                    return
                ns, name = match.group("ns"), match.group("name")
                if method == "POST" and name is None:
                    created = self._create(ns)
                    if created is not None and fake.on_create is not None:
                        fake.on_create(created)
                    return
                with fake.lock:
                    if method == "GET" and name:
                        obj = fake.objects.get((ns, name))
                        if obj is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                        else:
                            self._send(200, obj)
                    elif method == "PATCH" and name:
                        obj = fake.objects.get((ns, name))
                        if obj is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                            return
                        if self.headers.get("Content-Type") != "application/merge-patch+json":
                            self._status(415, "UnsupportedMediaType", "only merge patches here")
                            return
                        merged = _merge(obj, self._body())
                        merged["metadata"]["generation"] = obj["metadata"]["generation"] + 1
                        fake.objects[(ns, name)] = merged
                        self._send(200, merged)
                    elif method == "DELETE" and name:
                        if fake.objects.pop((ns, name), None) is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                        else:
                            self._send(200, {"kind": "Status", "status": "Success"})
                    else:
                        self._status(405, "MethodNotAllowed", method)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeKubeAPI:
        """Serve from a daemon thread; returns self."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def mark(
        self, namespace: str, name: str, *, url: str | None = None, message: str | None = None
    ) -> None:
        """Report an object ready at ``url``, or not ready with ``message``, as KServe would.

        Args:
            namespace: Its namespace.
            name: Its name.
            url: The predictor's URL (ready).
            message: Why it is not ready.
        """
        with self.lock:
            obj = self.objects.get((namespace, name))
            if obj is None:
                return
            if url is not None:
                self.set_ready(obj, url)
            else:
                obj["status"] = {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "RevisionFailed",
                            "message": message or "not ready",
                        }
                    ]
                }

    @staticmethod
    def set_ready(obj: dict[str, Any], url: str) -> None:
        obj["status"] = {
            "url": url,
            "address": {"url": url},
            "conditions": [{"type": "Ready", "status": "True"}],
        }

    def answer_infer(self, handler: Any, body: dict[str, Any]) -> None:
        if self.predictor_status != 200:
            handler._send(self.predictor_status, {"error": "input 'x': bad shape"})
            return
        (tensor,) = body["inputs"]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        handler._send(
            200,
            {
                "model_name": "m",
                "outputs": [
                    {
                        "name": "y",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": (x * 2).ravel().tolist(),
                    }
                ],
            },
        )

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "tester", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "tester"}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path
