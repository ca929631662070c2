"""The signed caller header: who on a district hub a forwarded call is for.

A hub forwards its users' calls on mirrored products to the city with its own API key (so the
city authenticates, authorizes and meters the hub's tenant as for any key), plus four headers
naming the original caller::

    X-CityBrain-Caller            the hub user's label, percent-encoded (e.g. key:4f1c…)
    X-CityBrain-Caller-Time       unix seconds when the hub signed it
    X-CityBrain-Caller-Nonce      32 random hex digits, used once
    X-CityBrain-Caller-Signature  hex HMAC-SHA256 over caller, method, path, time and nonce

The signing key is derived from the hub key's secret (HMAC-SHA256 of a fixed label under the
secret), so only a holder of the hub key can sign, and the city, which receives the key on the
same request, can check without storing anything more. :func:`verify_caller` refuses a
signature that does not match (a forged caller, or one moved to another method or path), one
whose time is more than ``max_skew_s`` away from the city's clock (expired), and a nonce seen
before within that window (replayed; :class:`ReplayGuard`, per process).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from marketplace.errors import UnauthenticatedError

CALLER_HEADER = "X-CityBrain-Caller"
TIME_HEADER = "X-CityBrain-Caller-Time"
NONCE_HEADER = "X-CityBrain-Caller-Nonce"
SIGNATURE_HEADER = "X-CityBrain-Caller-Signature"
HEADERS = (CALLER_HEADER, TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

_LABEL = b"citybrain-federation-caller-v1"
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_SIG_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_CALLER_CHARS = 300
DEFAULT_MAX_SKEW_S = 60.0


def signing_key(api_key: str) -> bytes:
    """The HMAC key derived from a hub's API key (``cbk_<id>_<secret>``)."""
    secret = api_key.rsplit("_", 1)[-1]
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def _message(caller: str, method: str, path: str, timestamp: int, nonce: str) -> bytes:
    return "\n".join(("v1", caller, method.upper(), path, str(timestamp), nonce)).encode()


def sign_caller(
    api_key: str, caller: str, method: str, path: str, *, now: float | None = None
) -> dict[str, str]:
    """The four headers that name ``caller`` on a call of ``method path`` made with ``api_key``."""
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    encoded = quote(caller, safe="")
    mac = hmac.new(signing_key(api_key), _message(encoded, method, path, ts, nonce), "sha256")
    return {
        CALLER_HEADER: encoded,
        TIME_HEADER: str(ts),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: mac.hexdigest(),
    }


class ReplayGuard:
    """Nonces seen within the signature window (per process; bounded, oldest dropped first)."""

    def __init__(self, window_s: float = 2 * DEFAULT_MAX_SKEW_S, max_entries: int = 100_000):
        self._window = window_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` is new (and remember it)."""
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at <= self._window and len(self._seen) < self._max:
                    break
                del self._seen[oldest]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


@dataclass(frozen=True, slots=True)
class SignedCaller:
    """A verified original caller: its label on the hub."""

    caller: str


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # A case-insensitive mapping (Starlette's) answers either; a plain dict has lower-case keys.
    value = headers.get(name)
    return value if value is not None else headers.get(name.lower())


def has_caller_headers(headers: Mapping[str, str]) -> bool:
    """Whether a request names a forwarded caller at all (any of the four headers)."""
    return any(_header(headers, h) is not None for h in HEADERS)


def verify_caller(
    api_key: str,
    headers: Mapping[str, str],
    method: str,
    path: str,
    guard: ReplayGuard,
    *,
    now: float | None = None,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> SignedCaller:
    """The caller the headers name, checked against ``api_key``'s signing key.

    Args:
        api_key: The key the request authenticated with.
        headers: The request's headers (a case-insensitive mapping, or lower-case names).
        method: The request's method; ``path``: its path (no query string).
        guard: Where nonces are remembered.
        now: The clock (unix seconds), for tests.
        max_skew_s: How far the signing time may be from ``now``.

    Raises:
        UnauthenticatedError: A missing or malformed header, a wrong signature, an expired
            time or a nonce used before (the message says which; no secret is in it).
    """
    values = {h: _header(headers, h) for h in HEADERS}
    encoded, ts_text, nonce, signature = (values[h] for h in HEADERS)
    if not encoded or not ts_text or not nonce or not signature:
        raise UnauthenticatedError(
            f"a forwarded call needs all of {', '.join(HEADERS)}", reason="federation-headers"
        )
    if len(encoded) > MAX_CALLER_CHARS or not ts_text.isdigit():
        raise UnauthenticatedError("malformed forwarded-caller header", reason="federation-header")
    if not _NONCE_RE.match(nonce) or not _SIG_RE.match(signature):
        raise UnauthenticatedError("malformed forwarded-caller header", reason="federation-header")
    ts = int(ts_text)
    expected = hmac.new(
        signing_key(api_key), _message(encoded, method, path, ts, nonce), "sha256"
    ).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise UnauthenticatedError(
            "the forwarded-caller signature does not match", reason="federation-signature"
        )
    clock = time.time() if now is None else now
    if abs(clock - ts) > max_skew_s:
        raise UnauthenticatedError(
            "the forwarded-caller signature has expired", reason="federation-expired"
        )
    if not guard.first_use(nonce, clock):
        raise UnauthenticatedError(
            "the forwarded-caller signature was used before", reason="federation-replayed"
        )
    return SignedCaller(caller=unquote(encoded))
