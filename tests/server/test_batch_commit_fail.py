"""A group-commit batch whose COMMIT really fails on PostgreSQL answers 503, not 500.

No mock: a DEFERRABLE INITIALLY DEFERRED constraint trigger on audit_events
raises at COMMIT for any event naming login "boom" (review r3's
poc_commit_fail.py). An authorized-keys miss for that login writes the
window's first event in the batch, so every statement succeeds and only the
COMMIT fails. docs/server.md promises 503 for that (the hosts log the service
as unavailable); the old mapping answered 500 internal_error (a RaiseException
is no OperationalError), and a deferred foreign key would have been a 409.
"""

from __future__ import annotations

import pytest

TRIGGERS = (
    """
    CREATE FUNCTION boom() RETURNS trigger AS $$
    BEGIN
      IF NEW.data LIKE '%"login":"boom"%' THEN RAISE EXCEPTION 'boom at commit'; END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql
    """,
    """
    CREATE CONSTRAINT TRIGGER boom AFTER INSERT ON audit_events
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION boom()
    """,
)


@pytest.fixture(autouse=True)
def _postgresql_only(db_backend: str) -> None:
    # A deferred constraint trigger that raises is PostgreSQL's; SQLite's batch COMMIT
    # fails only on I/O or locks (OperationalError, already a 503).
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL only (deferred constraint trigger)")


def test_a_failed_batch_commit_answers_503_and_commits_nothing(world):
    for stmt in TRIGGERS:
        world.svc.sql(stmt)
    code, body = world.akc("web1", "mallory", login="boom")
    assert code == 503, body
    assert body["error"] == "unavailable"
    rows = world.svc.sql("SELECT count(*) FROM audit_events WHERE data LIKE '%boom%'")
    assert rows == [(0,)]  # the batch's event was rolled back with its COMMIT
    assert "boom at commit" in world.svc.log_path.read_text(errors="replace")
    # Batches without such an event still commit: the service is not stuck.
    code, body = world.akc("web1", "mallory")
    assert (code, body["keys"]) == (200, [])
