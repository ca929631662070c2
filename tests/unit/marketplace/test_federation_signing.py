"""The signed caller header a district hub adds to a forwarded call (federation.signing)."""

from __future__ import annotations

import pytest

from marketplace.errors import UnauthenticatedError
from marketplace.federation.signing import (
    CALLER_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    ReplayGuard,
    has_caller_headers,
    sign_caller,
    verify_caller,
)

KEY = "cbk_0123456789ab_hubsecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
OTHER = "cbk_ba9876543210_othersecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
PATH = "/v2/models/traffic-police.flow-smoother/infer"
NOW = 1_800_000_000.0


def _verify(
    headers: dict[str, str],
    *,
    key: str = KEY,
    method: str = "POST",
    path: str = PATH,
    guard: ReplayGuard | None = None,
    now: float = NOW,
) -> str:
    return verify_caller(key, headers, method, path, guard or ReplayGuard(), now=now).caller


def test_a_signed_caller_verifies_and_round_trips_any_label() -> None:
    label = "xihu-school/user:张三@xihu.gov.cn"
    headers = sign_caller(KEY, label, "POST", PATH, now=NOW)
    assert has_caller_headers(headers)
    assert _verify(headers) == label
    # Header names arrive lower-cased from an ASGI server.
    lower = {k.lower(): v for k, v in sign_caller(KEY, label, "POST", PATH, now=NOW).items()}
    assert has_caller_headers(lower) and _verify(lower) == label


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({CALLER_HEADER: "xihu-school%2Fsomeone-else"}, "does not match"),
        ({TIME_HEADER: str(int(NOW) + 1)}, "does not match"),
        ({NONCE_HEADER: "0" * 32}, "does not match"),
        ({SIGNATURE_HEADER: "f" * 64}, "does not match"),
        ({SIGNATURE_HEADER: "not hex"}, "malformed"),
        ({TIME_HEADER: "yesterday"}, "malformed"),
    ],
)
def test_a_forged_header_is_refused(change: dict[str, str], message: str) -> None:
    headers = {**sign_caller(KEY, "xihu-school/key:abc", "POST", PATH, now=NOW), **change}
    with pytest.raises(UnauthenticatedError, match=message):
        _verify(headers)


def test_a_signature_holds_only_for_its_key_method_and_path() -> None:
    headers = sign_caller(KEY, "a/b", "POST", PATH, now=NOW)
    for kwargs in ({"key": OTHER}, {"method": "GET"}, {"path": PATH.replace("flow", "flux")}):
        with pytest.raises(UnauthenticatedError, match="does not match"):
            _verify(dict(headers), **kwargs)  # type: ignore[arg-type]


def test_an_expired_or_future_signature_is_refused() -> None:
    headers = sign_caller(KEY, "a/b", "POST", PATH, now=NOW - 61)
    with pytest.raises(UnauthenticatedError, match="expired"):
        _verify(headers)
    headers = sign_caller(KEY, "a/b", "POST", PATH, now=NOW + 61)
    with pytest.raises(UnauthenticatedError, match="expired"):
        _verify(headers)
    assert _verify(sign_caller(KEY, "a/b", "POST", PATH, now=NOW - 59)) == "a/b"


def test_a_replayed_signature_is_refused_within_its_window() -> None:
    guard = ReplayGuard(window_s=120)
    headers = sign_caller(KEY, "a/b", "POST", PATH, now=NOW)
    assert _verify(headers, guard=guard) == "a/b"
    with pytest.raises(UnauthenticatedError, match="used before"):
        _verify(headers, guard=guard, now=NOW + 30)
    # A fresh signature of the same call is a new nonce.
    assert _verify(sign_caller(KEY, "a/b", "POST", PATH, now=NOW), guard=guard) == "a/b"


def test_a_partial_header_set_is_refused() -> None:
    headers = sign_caller(KEY, "a/b", "POST", PATH, now=NOW)
    del headers[NONCE_HEADER]
    assert has_caller_headers(headers)
    with pytest.raises(UnauthenticatedError, match="needs all of"):
        _verify(headers)


def test_the_replay_guard_forgets_old_nonces_and_stays_bounded() -> None:
    guard = ReplayGuard(window_s=10, max_entries=3)
    assert guard.first_use("a", 0) and not guard.first_use("a", 5)
    assert guard.first_use("a", 20)  # past the window, and past verify's skew check too
    for n in "bcd":
        assert guard.first_use(n, 21)
    assert len(guard._seen) <= 3
