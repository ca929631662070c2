"""Runtimes: one runtime per manifest ``runtime`` name, each key routed to its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from model_store import EmbeddedRuntime
from model_store.errors import ModelUnavailableError
from model_store.runtimes.registry import Runtimes
from tests.unit.model_store.factories import make_torchscript_model

X = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_runtimes_route_each_key_to_the_runtime_it_was_registered_on(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    made: list[str] = []

    def make_second() -> EmbeddedRuntime:
        made.append("triton")
        return EmbeddedRuntime()

    async def scenario() -> None:
        runtimes = Runtimes(EmbeddedRuntime(), {"triton": make_second})
        try:
            runtimes.register("a.local:1", manifest, path)
            assert made == []  # the factory runs on the first model that needs it
            await runtimes.load(
                "a.remote:1", manifest.model_copy(update={"runtime": "triton"}), path
            )
            assert made == ["triton"]
            second = runtimes.made("triton")
            assert second is not None and second.is_ready("a.remote:1")
            assert not runtimes.embedded.stats().models.get("a.remote:1")
            out = await runtimes.infer("a.remote:1", {"x": X})
            np.testing.assert_array_equal(out["y"], X * 2)
            assert set(runtimes.stats().models) == {"a.local:1", "a.remote:1"}
            with pytest.raises(ValueError, match="another runtime"):
                runtimes.register(
                    "a.local:1", manifest.model_copy(update={"runtime": "triton"}), path
                )
            with pytest.raises(ModelUnavailableError, match="kserve runtime is not configured"):
                runtimes.register(
                    "a.k8s:1", manifest.model_copy(update={"runtime": "kserve"}), path
                )
            await runtimes.unload("a.remote:1")
            assert not runtimes.is_ready("a.remote:1")
        finally:
            await runtimes.close()

    asyncio.run(scenario())


def test_a_runtime_not_served_is_named_with_what_would_configure_it(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)

    async def scenario() -> None:
        runtimes = Runtimes(EmbeddedRuntime(), hints={"kserve": "a kubeconfig"})
        try:
            assert runtimes.names == ["embedded"] and runtimes.made("kserve") is None
            with pytest.raises(ModelUnavailableError) as raised:
                runtimes.register(
                    "a.k8s:1", manifest.model_copy(update={"runtime": "kserve"}), path
                )
            assert raised.value.status == 503
            assert "kserve runtime is not configured on this deployment (set a kubeconfig)" in str(
                raised.value
            )
            with pytest.raises(ModelUnavailableError, match=r"not configured on this deployment$"):
                runtimes.get("triton")  # no hint: named alone
            with pytest.raises(ModelUnavailableError, match="is not registered"):
                await runtimes.infer("a.k8s:1", {"x": X})
        finally:
            await runtimes.close()

    asyncio.run(scenario())
