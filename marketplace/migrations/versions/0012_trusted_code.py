"""product.trusted_code: the operator trusts a government model's code to run in process.

Python-format models run in sandbox workers (``model_store.sandbox``) unless this flag is set.
The application lets only the operator set it, only on government tenants' products; the
database repeats the second rule on both dialects (a trigger refuses the flag on another
tenant's product), and on PostgreSQL the tenant role (every API request's) cannot change the
flag at all.

Revision ID: 0012_trusted_code
Revises: 0011_downloadable
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_trusted_code"
down_revision = "0011_downloadable"
branch_labels = None
depends_on = None

ROLE = "citybrain_tenant"
GOVERNMENT = "('operator', 'agency', 'district')"
MESSAGE = "only government tenants'' models may be trusted to run in process"


def upgrade() -> None:
    op.add_column(
        "product",
        sa.Column("trusted_code", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION citybrain_check_trusted_code() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF current_user = '{ROLE}' AND (
                    (TG_OP = 'INSERT' AND NEW.trusted_code)
                    OR (TG_OP = 'UPDATE' AND NEW.trusted_code IS DISTINCT FROM OLD.trusted_code)
                ) THEN
                    RAISE EXCEPTION 'only the operator decides which code runs in process';
                END IF;
                IF NEW.trusted_code AND (
                    SELECT kind FROM tenant WHERE id = NEW.tenant_id
                ) NOT IN {GOVERNMENT} THEN
                    RAISE EXCEPTION '{MESSAGE}';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        # Row triggers that fire only when the flag is involved: bulk catalog loads pay nothing.
        op.execute(
            "CREATE TRIGGER product_trusted_code_insert BEFORE INSERT ON product "
            "FOR EACH ROW WHEN (NEW.trusted_code) EXECUTE FUNCTION citybrain_check_trusted_code()"
        )
        op.execute(
            "CREATE TRIGGER product_trusted_code_update BEFORE UPDATE OF trusted_code, tenant_id "
            "ON product FOR EACH ROW EXECUTE FUNCTION citybrain_check_trusted_code()"
        )
        return
    for event in ("INSERT", "UPDATE OF trusted_code, tenant_id"):
        name = "product_trusted_code_" + event.split()[0].lower()
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {event} ON product "
            f"WHEN NEW.trusted_code AND (SELECT kind FROM tenant WHERE id = NEW.tenant_id) "
            f"NOT IN {GOVERNMENT} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS product_trusted_code_insert ON product")
        op.execute("DROP TRIGGER IF EXISTS product_trusted_code_update ON product")
        op.execute("DROP FUNCTION IF EXISTS citybrain_check_trusted_code()")
    else:
        op.execute("DROP TRIGGER IF EXISTS product_trusted_code_insert")
        op.execute("DROP TRIGGER IF EXISTS product_trusted_code_update")
    op.drop_column("product", "trusted_code")
