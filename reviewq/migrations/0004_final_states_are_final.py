"""A database trigger that keeps a request in its final state, on PostgreSQL and SQLite alike.

Released, denied, expired and failed requests never change status, action or decision again,
whatever writes to the table (a bug, a raw SQL UPDATE, a console session). Other columns (its
timestamps) may still change, and the row may be deleted (retention). The maintenance row of
``reviewq_audit_maintenance`` (see 0002) switches it off, as it does the audit log's.
"""

from __future__ import annotations

from django.db import migrations

from reviewq.migrations._vendor_sql import run_by_vendor

FINAL = "('released', 'denied', 'expired', 'failed')"
POSTGRES = [
    f"""
    CREATE OR REPLACE FUNCTION reviewq_request_final_states() RETURNS trigger AS $$
    BEGIN
        IF OLD.status IN {FINAL}
           AND (NEW.status IS DISTINCT FROM OLD.status
                OR NEW.action IS DISTINCT FROM OLD.action
                OR NEW.decision IS DISTINCT FROM OLD.decision)
           AND NOT EXISTS (SELECT 1 FROM reviewq_audit_maintenance) THEN
            RAISE EXCEPTION 'request % is %: a final state is never left or rewritten', OLD.id, OLD.status;
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER reviewq_request_final_states
    BEFORE UPDATE ON reviewq_request
    FOR EACH ROW EXECUTE FUNCTION reviewq_request_final_states()
    """,
]
POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS reviewq_request_final_states ON reviewq_request",
    "DROP FUNCTION IF EXISTS reviewq_request_final_states()",
]
SQLITE = [
    f"""
    CREATE TRIGGER IF NOT EXISTS reviewq_request_final_states
    BEFORE UPDATE OF status, action, decision ON reviewq_request
    WHEN OLD.status IN {FINAL}
        AND (NEW.status IS NOT OLD.status OR NEW.action IS NOT OLD.action OR NEW.decision IS NOT OLD.decision)
        AND NOT EXISTS (SELECT 1 FROM reviewq_audit_maintenance)
    BEGIN SELECT RAISE(ABORT, 'a final state is never left or rewritten'); END
    """,
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS reviewq_request_final_states"]


class Migration(migrations.Migration):
    dependencies = [("reviewq", "0003_one_tier_enum")]

    operations = [
        migrations.RunPython(
            run_by_vendor({"postgresql": POSTGRES, "sqlite": SQLITE}),
            run_by_vendor({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        )
    ]
