"""Database triggers that make the audit log append-only, on PostgreSQL and SQLite alike.

The one way around them is a row in ``reviewq_audit_maintenance`` (a table Django does not
manage, so ``flush`` leaves it alone): the test suite uses it to empty the log between tests.
"""

from __future__ import annotations

from django.db import migrations

from reviewq.migrations._vendor_sql import run_by_vendor

POSTGRES = [
    "CREATE TABLE IF NOT EXISTS reviewq_audit_maintenance (enabled integer NOT NULL)",
    """
    CREATE OR REPLACE FUNCTION reviewq_audit_append_only() RETURNS trigger AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM reviewq_audit_maintenance) THEN
            IF TG_OP = 'UPDATE' THEN
                RETURN NEW;
            END IF;
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER reviewq_auditevent_append_only
    BEFORE UPDATE OR DELETE ON reviewq_auditevent
    FOR EACH ROW EXECUTE FUNCTION reviewq_audit_append_only()
    """,
]
POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS reviewq_auditevent_append_only ON reviewq_auditevent",
    "DROP FUNCTION IF EXISTS reviewq_audit_append_only()",
    "DROP TABLE IF EXISTS reviewq_audit_maintenance",
]
SQLITE = [
    "CREATE TABLE IF NOT EXISTS reviewq_audit_maintenance (enabled integer NOT NULL)",
    """
    CREATE TRIGGER IF NOT EXISTS reviewq_auditevent_no_update BEFORE UPDATE ON reviewq_auditevent
    WHEN NOT EXISTS (SELECT 1 FROM reviewq_audit_maintenance)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS reviewq_auditevent_no_delete BEFORE DELETE ON reviewq_auditevent
    WHEN NOT EXISTS (SELECT 1 FROM reviewq_audit_maintenance)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE refused'); END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS reviewq_auditevent_no_update",
    "DROP TRIGGER IF EXISTS reviewq_auditevent_no_delete",
    "DROP TABLE IF EXISTS reviewq_audit_maintenance",
]


class Migration(migrations.Migration):
    dependencies = [("reviewq", "0001_initial")]

    operations = [
        migrations.RunPython(
            run_by_vendor({"postgresql": POSTGRES, "sqlite": SQLITE}),
            run_by_vendor({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        )
    ]
