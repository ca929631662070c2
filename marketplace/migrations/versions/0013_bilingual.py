"""Bilingual catalog: Chinese titles and descriptions, and Chinese words in full-text search.

``product.title_zh`` / ``product.description_zh`` hold a listing's Simplified Chinese text next
to its English ``title`` / ``description`` (tags may be Chinese as they are). The three
``search_*_zh`` columns hold the Chinese words of the title, tags and description (both
languages), segmented by jieba and space-joined, written by the catalog service
(``marketplace.catalog.zh``): the database's own tokenizers would take a whole Chinese phrase
as one word.

Full-text search reads them with the weights of the column they come from:
- PostgreSQL: ``product.search_vector`` is regenerated to include them (title A, tags B,
  description C). Its upkeep — the per-term tables of migration 0009 — follows from it through
  the existing statement-level triggers. No product has Chinese words yet when this runs, so
  every existing vector, and therefore every count and term row, stays what it was.
- SQLite: ``product_fts`` is rebuilt with three more columns and its triggers follow.

Revision ID: 0013_bilingual
Revises: 0012_trusted_code
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_bilingual"
down_revision = "0012_trusted_code"
branch_labels = None
depends_on = None

ZH_COLUMNS = ("search_title_zh", "search_tags_zh", "search_description_zh")


def _vector(with_zh: bool) -> str:
    parts = [("title", "A"), ("tags_text", "B"), ("description", "C")]
    if with_zh:
        parts += [(c, w) for c, w in zip(ZH_COLUMNS, "ABC", strict=True)]
    body = " || ".join(
        f"setweight(to_tsvector('simple', coalesce({c}, '')), '{w}')" for c, w in parts
    )
    return (
        f"ALTER TABLE product ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({body}) STORED"
    )


def _fts(columns: tuple[str, ...]) -> list[str]:
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    return [
        f"CREATE VIRTUAL TABLE product_fts USING fts5({cols}, content='product',"
        " content_rowid='id', tokenize='unicode61')",
        f"CREATE TRIGGER product_fts_ai AFTER INSERT ON product BEGIN"
        f" INSERT INTO product_fts(rowid, {cols}) VALUES (new.id, {new}); END",
        f"CREATE TRIGGER product_fts_ad AFTER DELETE ON product BEGIN"
        f" INSERT INTO product_fts(product_fts, rowid, {cols}) VALUES ('delete', old.id, {old});"
        " END",
        f"CREATE TRIGGER product_fts_au AFTER UPDATE ON product BEGIN"
        f" INSERT INTO product_fts(product_fts, rowid, {cols}) VALUES ('delete', old.id, {old});"
        f" INSERT INTO product_fts(rowid, {cols}) VALUES (new.id, {new}); END",
        "INSERT INTO product_fts(product_fts) VALUES ('rebuild')",
    ]


def _drop_fts() -> None:
    for t in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS product_fts_{t}")
    op.execute("DROP TABLE IF EXISTS product_fts")


_BASE = ("title", "tags_text", "description")


def upgrade() -> None:
    op.add_column("product", sa.Column("title_zh", sa.String(300), nullable=True))
    op.add_column("product", sa.Column("description_zh", sa.Text, nullable=True))
    for column in ZH_COLUMNS:
        op.add_column("product", sa.Column(column, sa.Text, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE product DROP COLUMN search_vector")  # drops ix_product_search
        op.execute(_vector(with_zh=True))
        op.execute("CREATE INDEX ix_product_search ON product USING GIN (search_vector)")
    else:
        _drop_fts()
        for stmt in _fts(_BASE + ZH_COLUMNS):
            op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Through the triggers first, so the per-term tables forget the Chinese words (the
        # column rewrite below fires no trigger).
        op.execute(
            "UPDATE product SET search_title_zh = NULL, search_tags_zh = NULL,"
            " search_description_zh = NULL WHERE coalesce(search_title_zh, search_tags_zh,"
            " search_description_zh) IS NOT NULL"
        )
        op.execute("ALTER TABLE product DROP COLUMN search_vector")
        op.execute(_vector(with_zh=False))
        op.execute("CREATE INDEX ix_product_search ON product USING GIN (search_vector)")
    else:
        _drop_fts()
    for column in (*ZH_COLUMNS, "description_zh", "title_zh"):
        op.drop_column("product", column)  # SQLite 3.35+ drops a column in place
    if op.get_bind().dialect.name != "postgresql":
        for stmt in _fts(_BASE):
            op.execute(stmt)
