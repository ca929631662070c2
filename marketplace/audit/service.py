"""The audit log: append-only, each entry hash-chained to the one before it.

``hash = sha256(prev_hash || canonical(seq, at, request_id, actor, tenant, action, target,
outcome, detail))``. ``audit_head`` holds the last seq and hash and is updated in the same
transaction as every append, so altering, deleting (the newest entries included) or reordering
rows is detected by :func:`verify_chain`. Appends serialise on the head row (``FOR UPDATE`` on
PostgreSQL; SQLite already serialises writers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.context import Principal, current_request_id
from marketplace.tables import AuditEntry, AuditHead, utcnow

GENESIS = "0" * 64


def _canonical_time(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    request_id: str,
    actor: str,
    tenant_id: int | None,
    action: str,
    target: str,
    outcome: str,
    detail: dict[str, Any],
) -> str:
    body = json.dumps(
        [seq, _canonical_time(at), request_id, actor, tenant_id, action, target, outcome, detail],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


_HASHED_FIELDS = (
    "seq",
    "at",
    "request_id",
    "actor",
    "tenant_id",
    "action",
    "target",
    "outcome",
    "detail",
)
"""The entry's columns that :func:`entry_hash` covers (all but the hashes themselves)."""


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _HASHED_FIELDS}


def record(
    session: Session,
    *,
    actor: str,
    tenant_id: int | None,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's transaction (atomic with the write it describes)."""
    head = session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    # JSON round trip now, so the hash covers exactly what the database will hand back.
    detail_norm: dict[str, Any] = json.loads(json.dumps(detail or {}, default=str))
    at = utcnow()
    seq = head.seq + 1
    rid = request_id or current_request_id()
    entry = AuditEntry(
        seq=seq,
        at=at,
        request_id=rid,
        actor=actor,
        tenant_id=tenant_id,
        action=action,
        target=target,
        outcome=outcome,
        detail=detail_norm,
        prev_hash=head.hash,
    )
    entry.hash = digest = entry_hash(head.hash, **_hashed_fields(entry))
    session.add(entry)
    head.seq = seq
    head.hash = digest
    session.flush()
    return entry


def record_action(
    session: Session,
    caller: Principal,
    *,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry for what ``caller`` did (see :func:`record`): the actor is the caller's
    label, the tenant its tenant."""
    return record(
        session,
        actor=caller.label,
        tenant_id=caller.tenant_id,
        action=action,
        target=target,
        outcome=outcome,
        detail=detail,
    )


def record_decision(factory: sessionmaker[Session], **fields: Any) -> None:
    """Append in a transaction of its own: for denials, whose request is rolled back."""
    with factory() as session, session.begin():
        record(session, **fields)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str = ""


def _iter_entries(session: Session, batch: int = 5000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq > last)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify_chain(session: Session) -> VerifyResult:
    """Walk the chain in seq order; report the first entry that does not check out."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    for entry in _iter_entries(session):
        if entry.seq != expected_seq:
            return VerifyResult(
                False,
                checked,
                expected_seq,
                f"entry {expected_seq} is missing (next is {entry.seq})",
            )
        if entry.prev_hash != prev:
            return VerifyResult(
                False, checked, entry.seq, "prev_hash does not match the entry before it"
            )
        digest = entry_hash(prev, **_hashed_fields(entry))
        if digest != entry.hash:
            return VerifyResult(False, checked, entry.seq, "content does not match its hash")
        prev = entry.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if head_seq != checked or head_hash != prev:
        return VerifyResult(
            False,
            checked,
            checked + 1 if head_seq > checked else head_seq,
            f"chain ends at entry {checked} but the head records entry {head_seq}",
        )
    return VerifyResult(True, checked)


def list_entries(
    session: Session,
    *,
    tenant_id: int | None,
    action: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditEntry], int]:
    from sqlalchemy import func

    stmt = select(AuditEntry)
    if tenant_id is not None:
        stmt = stmt.where(AuditEntry.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = list(session.scalars(stmt.order_by(AuditEntry.seq.desc()).offset(offset).limit(limit)))
    return rows, total
