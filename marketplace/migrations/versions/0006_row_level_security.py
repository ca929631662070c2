"""PostgreSQL row-level security on tenant-owned tables: a second wall behind the app's checks.

Revision ID: 0006_row_level_security
Revises: 0005_access

Requests run their transactions as the role ``citybrain_tenant`` with the caller's tenant set
(``marketplace.db.set_tenant_context``: ``SET LOCAL ROLE`` plus ``citybrain.tenant_id``,
``citybrain.government`` and ``citybrain.operator``; the anonymous caller is tenant 0). The
policies below repeat the tier table and ownership rules in SQL, so a query the application
forgot to filter still sees only what that tenant may see. Maintenance paths (migrations, the
CLI, the usage flusher) run as the connecting user, the tables' owner, which RLS leaves alone.
SQLite has no row-level security; there the application's checks are the only wall.
"""

from __future__ import annotations

from alembic import op

revision = "0006_row_level_security"
down_revision = "0005_access"
branch_labels = None
depends_on = None

ROLE = "citybrain_tenant"
T = "citybrain_current_tenant()"
OP = "citybrain_is_operator()"
GOV = "citybrain_is_government()"
VISIBLE_PRODUCT = (
    f"(tenant_id = {T}"
    " OR (state IN ('published', 'deprecated') AND (tier = 'public'"
    f" OR ({T} > 0 AND tier = 'restricted') OR ({GOV} AND tier = 'confidential')))"
    # The operator reviews listings, and sending one back to draft must keep it readable to
    # the operator's UPDATE: the wall lets the operator see every non-secret row (the
    # application is stricter about drafts).
    f" OR ({OP} AND tier <> 'secret'))"
)
OWN_OR_PRODUCT_OWNER = (
    f"(tenant_id = {T} OR {OP}"
    f" OR product_id IN (SELECT id FROM product WHERE product.tenant_id = {T}))"
)

POLICIES: dict[str, list[str]] = {
    "api_key": [f"FOR ALL USING (tenant_id = {T}) WITH CHECK (tenant_id = {T})"],
    "usage_event": [f"FOR SELECT USING (tenant_id = {T} OR {OP})"],
    "audit_entry": [
        f"FOR SELECT USING (tenant_id = {T} OR {OP})",
        f"FOR INSERT WITH CHECK (tenant_id IS NULL OR tenant_id = {T} OR {OP})",
    ],
    "access_request": [
        f"FOR ALL USING {OWN_OR_PRODUCT_OWNER} WITH CHECK {OWN_OR_PRODUCT_OWNER}",
    ],
    "access_grant": [
        f"FOR ALL USING {OWN_OR_PRODUCT_OWNER} WITH CHECK {OWN_OR_PRODUCT_OWNER}",
    ],
    "product": [
        f"FOR SELECT USING {VISIBLE_PRODUCT}",
        f"FOR INSERT WITH CHECK (tenant_id = {T})",
        f"FOR UPDATE USING (tenant_id = {T} OR ({OP} AND tier <> 'secret'))"
        f" WITH CHECK (tenant_id = {T} OR ({OP} AND tier <> 'secret'))",
        f"FOR DELETE USING (tenant_id = {T})",
    ],
    "product_version": [
        "FOR SELECT USING (product_id IN (SELECT id FROM product))",
        f"FOR INSERT WITH CHECK (product_id IN (SELECT id FROM product WHERE tenant_id = {T}))",
    ],
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
    # The connecting user must be able to SET ROLE to it (superusers always can).
    op.execute(
        f"DO $$ BEGIN EXECUTE format('GRANT {ROLE} TO %I', current_user); "
        "EXCEPTION WHEN others THEN NULL; END $$"
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}"
    )
    for name, setting, kind in (
        ("citybrain_current_tenant", "citybrain.tenant_id", "int"),
        ("citybrain_is_operator", "citybrain.operator", "bool"),
        ("citybrain_is_government", "citybrain.government", "bool"),
    ):
        if kind == "int":
            body = f"SELECT coalesce(nullif(current_setting('{setting}', true), ''), '-1')::int"
            returns = "int"
        else:
            body = f"SELECT coalesce(current_setting('{setting}', true), '') = 'on'"
            returns = "boolean"
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS {returns} LANGUAGE sql STABLE AS $$ {body} $$"
        )
    for table, policies in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        for i, policy in enumerate(policies):
            command, _, rest = policy.removeprefix("FOR ").partition(" ")
            op.execute(f"CREATE POLICY tenant_wall_{i} ON {table} FOR {command} TO {ROLE} {rest}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, policies in POLICIES.items():
        for i in range(len(policies)):
            op.execute(f"DROP POLICY IF EXISTS tenant_wall_{i} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for name in ("citybrain_current_tenant", "citybrain_is_operator", "citybrain_is_government"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
