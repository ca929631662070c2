"""Server-side portal sessions behind a signed cookie."""

from __future__ import annotations

import pytest

from marketplace.portal import sessions
from marketplace.portal.sessions import SessionStore


def _store(**kw: object) -> SessionStore:
    return SessionStore(b"0123456789abcdef0123456789abcdef", idle_s=60, max_sessions=3, **kw)  # type: ignore[arg-type]


def test_the_cookie_names_the_session_and_nothing_else() -> None:
    store = _store()
    s = store.new()
    s.credential = "cbk_0123456789ab_secretsecretsecretsecret"
    cookie = store.cookie_value(s)
    assert "secret" not in cookie and s.csrf not in cookie
    assert store.load(cookie) is s


@pytest.mark.parametrize("tamper", ["id", "signature", "unsigned", "empty"])
def test_a_forged_or_altered_cookie_is_ignored(tamper: str) -> None:
    store = _store()
    s = store.new()
    cookie = store.cookie_value(s)
    sid, _, sig = cookie.rpartition(".")
    forged = {
        "id": f"{sid[:-1]}{'A' if sid[-1] != 'A' else 'B'}.{sig}",
        "signature": f"{sid}.{sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
        "unsigned": sid,
        "empty": "",
    }[tamper]
    assert store.load(forged) is None
    # Another process's secret does not accept this one's cookies either.
    other = SessionStore(b"another-secret-another-secret-xx", idle_s=60, max_sessions=3)
    assert other.load(cookie) is None


def test_idle_sessions_end(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: now[0])
    store = _store()
    s = store.new()
    cookie = store.cookie_value(s)
    now[0] += 59
    assert store.load(cookie) is s  # a visit renews the idle clock
    now[0] += 59
    assert store.load(cookie) is s
    now[0] += 61
    assert store.load(cookie) is None


def test_the_least_recently_used_sessions_go_first_past_the_bound() -> None:
    store = _store()
    a, b, c = store.new(), store.new(), store.new()
    assert store.load(store.cookie_value(a)) is a  # a is now the most recent
    store.new()
    assert store.load(store.cookie_value(b)) is None
    assert store.load(store.cookie_value(a)) is a and store.load(store.cookie_value(c)) is c


def test_a_flood_of_visitors_signs_no_one_out() -> None:
    store = _store()
    signed_in = store.renew(store.new(), credential="k", auth_kind="key")
    for _ in range(50):
        store.new()
    assert store.load(store.cookie_value(signed_in)) is signed_in
    assert len(store) == 3


def test_renewing_drops_the_old_id_and_keeps_pending_messages() -> None:
    store = _store()
    old = store.new()
    old.flash("ok", "hello")
    new = store.renew(old, credential="k", auth_kind="key")
    assert new.id != old.id and new.csrf != old.csrf
    assert store.load(store.cookie_value(old)) is None
    assert new.credential == "k" and new.take_flashes() == [("ok", "hello")]
    assert new.csrf_ok(new.csrf) and not new.csrf_ok(old.csrf) and not new.csrf_ok(None)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        SessionStore(b"short", idle_s=60, max_sessions=3)
