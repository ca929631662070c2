"""Search-side tables for broad full-text queries on PostgreSQL; statement-level upkeep.

A common word matches a tenth of the catalog; counting facets over its matches and ranking
them meant visiting every matching product row (9,000+ heap pages at 100,000 products).
Two tables, kept in step by triggers on ``product``, answer a one-word query from a few
hundred index entries instead (see ``marketplace.catalog.search``):

- ``product_term_count``: per lexeme of ``product.search_vector`` and per facet key (owner,
  state, tier, kind, domain), how many products hold that lexeme — the facet counts of a
  query word, as ``product_facet`` holds those of the whole catalog;
- ``product_term``: the lexemes of each product's title (``w`` = 2) and tags (``w`` = 1),
  in ranking order, with the product's facet key, so the best-ranked matches of a word that
  a caller may see come first from its index alone.

Neither is readable by the tenant role: they hold the words of every tenant's listings,
secret ones included. The trigger function runs as their owner.

The triggers are statement-level, with transition tables: a statement that writes many
products (a bulk load) updates each count once, instead of once per product. ``product_facet``
moves to the same trigger for that reason: its row-level trigger left one dead row version
per product written (100,000 of them in 2,000 rows after a bulk load, until a vacuum).

Revision ID: 0009_search_terms
Revises: 0008_quota_limit
"""

from __future__ import annotations

from alembic import op

revision = "0009_search_terms"
down_revision = "0008_quota_limit"
branch_labels = None
depends_on = None

ROLE = "citybrain_tenant"
FACET_KEY = "tenant_id, state, tier, kind, domain"
TERM_KEY = f"lexeme, {FACET_KEY}"


def _rows(source: str, sign: str, *, lexemes: bool) -> str:
    """One row per product (per lexeme of it, with ``lexemes``) of ``source``, counting ±1."""
    if lexemes:
        return (
            f"SELECT l.lexeme, r.tenant_id, r.state, r.tier, r.kind, r.domain, {sign}1 AS n"
            f" FROM {source} r, unnest(tsvector_to_array(r.search_vector)) AS l(lexeme)"
        )
    return f"SELECT r.tenant_id, r.state, r.tier, r.kind, r.domain, {sign}1 AS n FROM {source} r"


def _count(table: str, key: str, *sources: tuple[str, str]) -> str:
    """Add what ``sources`` count to ``table``'s counts; keys whose count does not change are
    not touched (an update that leaves facets and text alone writes nothing)."""
    lexemes = table == "product_term_count"
    rows = " UNION ALL ".join(_rows(s, sign, lexemes=lexemes) for s, sign in sources)
    # Sorted, so that concurrent writers lock shared rows in the same order.
    return (
        f"INSERT INTO {table} AS c ({key}, n)"
        f" SELECT {key}, sum(n) FROM ({rows}) d GROUP BY {key} HAVING sum(n) <> 0"
        f" ORDER BY {key}"
        f" ON CONFLICT ({key}) DO UPDATE SET n = c.n + excluded.n"
    )


def _add_terms(source: str, where: str = "") -> str:
    """Title and tag lexemes of the rows ``r`` in ``source``; ``w`` is the better of the two."""
    return (
        f"INSERT INTO product_term (lexeme, w, product_id, {FACET_KEY})"
        " SELECT u.lexeme, CASE WHEN 'A' = ANY (u.weights) THEN 2 ELSE 1 END, r.id,"
        " r.tenant_id, r.state, r.tier, r.kind, r.domain"
        f" FROM {source}, unnest(r.search_vector) AS u"
        f" WHERE u.weights && ARRAY['A', 'B'] {where}"
    )


# A product's terms change with its text and with its facet key.
_CHANGED = (
    f"(o.search_vector, o.{FACET_KEY.replace(', ', ', o.')})"
    f" IS DISTINCT FROM (r.search_vector, r.{FACET_KEY.replace(', ', ', r.')})"
)


def _counts(*sources: tuple[str, str]) -> str:
    return (
        f"{_count('product_facet', FACET_KEY, *sources)};\n"
        f"    {_count('product_term_count', TERM_KEY, *sources)}"
    )


SYNC = f"""
CREATE FUNCTION product_search_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_counts(("new_rows", "+"))};
    {_add_terms("new_rows r")};
  ELSIF TG_OP = 'DELETE' THEN
    {_counts(("old_rows", "-"))};
    DELETE FROM product_term t USING old_rows o WHERE t.product_id = o.id;
  ELSIF TG_OP = 'UPDATE' THEN
    {_counts(("new_rows", "+"), ("old_rows", "-"))};
    DELETE FROM product_term t USING old_rows o JOIN new_rows r ON r.id = o.id
      WHERE t.product_id = o.id AND {_CHANGED};
    {_add_terms("new_rows r JOIN old_rows o ON o.id = r.id", f"AND {_CHANGED}")};
  ELSE  -- TRUNCATE (DELETE: a TRUNCATE that names these tables too is truncating them now)
    DELETE FROM product_term;
    DELETE FROM product_term_count;
    DELETE FROM product_facet;
  END IF;
  RETURN NULL;
END $$
"""

# Migration 0001's row-level upkeep of product_facet (restored by a downgrade).
_MATCH_OLD = (
    "tenant_id = OLD.tenant_id AND state = OLD.state AND tier = OLD.tier"
    " AND kind = OLD.kind AND domain = OLD.domain"
)
_ADD_NEW = (
    f"INSERT INTO product_facet ({FACET_KEY}, n)"
    " VALUES (NEW.tenant_id, NEW.state, NEW.tier, NEW.kind, NEW.domain, 1)"
    f" ON CONFLICT ({FACET_KEY}) DO UPDATE SET n = product_facet.n + 1"
)
_ROW_SYNC = (
    "CREATE FUNCTION product_facet_sync() RETURNS trigger AS $$ BEGIN"
    f" IF TG_OP IN ('DELETE', 'UPDATE') THEN UPDATE product_facet SET n = n - 1"
    f" WHERE {_MATCH_OLD}; END IF;"
    f" IF TG_OP IN ('INSERT', 'UPDATE') THEN {_ADD_NEW}; END IF;"
    " RETURN NULL; END $$ LANGUAGE plpgsql"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite searches through FTS5, and keeps its row-level triggers (0001)
    op.execute(
        "CREATE TABLE product_term_count ("
        ' lexeme text COLLATE "C" NOT NULL, tenant_id integer NOT NULL,'
        " state varchar(20) NOT NULL, tier varchar(20) NOT NULL, kind varchar(20) NOT NULL,"
        f" domain varchar(40) NOT NULL, n integer NOT NULL, PRIMARY KEY ({TERM_KEY}))"
    )
    op.execute(
        "CREATE TABLE product_term ("
        ' lexeme text COLLATE "C" NOT NULL, w smallint NOT NULL, product_id integer NOT NULL,'
        " tenant_id integer NOT NULL, state varchar(20) NOT NULL, tier varchar(20) NOT NULL,"
        " kind varchar(20) NOT NULL, domain varchar(40) NOT NULL,"
        f" PRIMARY KEY (lexeme, w, product_id) INCLUDE ({FACET_KEY}))"
    )
    op.execute("CREATE INDEX ix_product_term_product_id ON product_term (product_id)")
    op.execute(f"REVOKE ALL ON product_term, product_term_count FROM {ROLE}")
    op.execute("DROP TRIGGER product_facet_sync ON product")
    op.execute("DROP FUNCTION product_facet_sync()")
    op.execute(SYNC)
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER product_search_{event.lower()} AFTER {event} ON product"
            f" REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION product_search_sync()"
        )
    op.execute(
        "CREATE TRIGGER product_search_truncate AFTER TRUNCATE ON product"
        " FOR EACH STATEMENT EXECUTE FUNCTION product_search_sync()"
    )
    # The catalog as it stands (product_facet already counts it).
    op.execute(_count("product_term_count", TERM_KEY, ("product", "+")))
    op.execute(_add_terms("product r"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for event in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS product_search_{event} ON product")
    op.execute("DROP FUNCTION IF EXISTS product_search_sync()")
    op.execute("DROP TABLE IF EXISTS product_term")
    op.execute("DROP TABLE IF EXISTS product_term_count")
    op.execute(_ROW_SYNC)
    op.execute(
        f"CREATE TRIGGER product_facet_sync AFTER INSERT OR DELETE OR UPDATE OF {FACET_KEY}"
        " ON product FOR EACH ROW EXECUTE FUNCTION product_facet_sync()"
    )
