"""Portal sessions: kept in the server process, named by a random id in a signed cookie.

The cookie (``cb_session``: HttpOnly, SameSite=Lax, Secure over HTTPS) carries
``<id>.<HMAC-SHA256 of the id>`` and nothing else: the credential a visitor signed in with (an
API key, or the realm's access token) stays here, never in anything the browser can read. A
forged or altered cookie fails the HMAC and is ignored. Signing in starts a new session (a new
id), so an id planted before sign-in is worth nothing after it.

Each session has a CSRF token; every form the portal serves carries it, and every POST must
send it back (:meth:`PortalSession.csrf_ok`). SameSite=Lax already keeps the cookie off
cross-site POSTs; the token is the second wall.

The store is one process's memory: sessions idle past ``idle_s`` end, and past ``max_sessions``
the least recently used anonymous ones go first (signed-in ones only when all are). Several
processes serving one portal need the same secret and sticky routing (see ``PortalSettings``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

COOKIE_NAME = "cb_session"
AuthKind = Literal["key", "oidc"]


@dataclass
class PortalSession:
    """One visitor's session. ``auth_kind``/``credential``: how they signed in (None: anonymous)."""

    id: str
    csrf: str
    auth_kind: AuthKind | None = None
    credential: str | None = None
    # OIDC sign-ins: the realm's refresh token, to renew ``credential`` (the access token).
    refresh_token: str | None = None
    # Who the sign-in named, for the header ("user:parkeasy-admin", "key:ab12…").
    display: str | None = None
    # The OIDC flow in progress: state, nonce, PKCE verifier and where to return.
    pending_login: dict[str, str] | None = None
    # Messages for the next page: (kind, text) with kind "ok" or "error".
    flashes: list[tuple[str, str]] = field(default_factory=list)
    touched: float = field(default_factory=time.monotonic)

    @property
    def signed_in(self) -> bool:
        return self.credential is not None

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf, presented)

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class SessionStore:
    """Sessions by id in this process, with idle expiry and a size bound. Thread-safe."""

    def __init__(self, secret: bytes, *, idle_s: float, max_sessions: int) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, PortalSession] = OrderedDict()

    # -- the cookie ---------------------------------------------------------------------------

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, session: PortalSession) -> str:
        return f"{session.id}.{self._sign(session.id)}"

    def _id_from_cookie(self, value: str | None) -> str | None:
        if not value:
            return None
        session_id, _, signature = value.rpartition(".")
        if not session_id or not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        return session_id

    # -- sessions -----------------------------------------------------------------------------

    def new(self) -> PortalSession:
        session = PortalSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._evict()
        return session

    def _evict(self) -> None:
        """Drop the least recently used anonymous session (the oldest signed-in one only when
        all are signed in): a flood of new visitors never signs anyone out."""
        for session_id, session in self._sessions.items():
            if not session.signed_in:
                del self._sessions[session_id]
                return
        self._sessions.popitem(last=False)

    def load(self, cookie: str | None) -> PortalSession | None:
        """The live session a cookie names, or None (no cookie, bad signature, ended)."""
        session_id = self._id_from_cookie(cookie)
        if session_id is None:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.touched > self.idle_s:
                del self._sessions[session_id]
                return None
            session.touched = now
            self._sessions.move_to_end(session_id)
            return session

    def renew(self, old: PortalSession, **changes: Any) -> PortalSession:
        """A new session (new id and CSRF token) in place of ``old``, with ``changes`` applied:
        what signing in and out do, so no id outlives a change of who is signed in."""
        fresh = self.new()
        fresh.flashes = list(old.flashes)
        for name, value in changes.items():
            setattr(fresh, name, value)
        self.drop(old)
        return fresh

    def drop(self, session: PortalSession) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def __len__(self) -> int:
        return len(self._sessions)
