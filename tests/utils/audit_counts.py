"""Count hook decisions in the audit log, the way the aggregation records them.

Authorized-keys misses and allows are written once per (host, login, fingerprint
[, approval]) and window; repeats are counted in audit_miss_rows / recorded in audit_key_allows
and folded into one ``hook.authorized_keys.repeated`` event (with ``repeats``)
when the window closes (server/fold.py). Every call is in exactly one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable


def hook_decisions(sql: Callable[[str], list]) -> int:
    """Hook calls accounted for: single events + folded repeats + repeats still counted.

    ``sql`` runs one query on the service's database (e.g. Service.sqlite).
    """
    events = sql(
        "SELECT count(*) FROM audit_events WHERE kind LIKE 'hook.%' "
        "AND kind != 'hook.authorized_keys.repeated'"
    )[0][0]
    folded = sum(
        json.loads(d)["repeats"]
        for (d,) in sql(
            "SELECT data FROM audit_events WHERE kind = 'hook.authorized_keys.repeated'"
        )
    )
    # Miss and allow rows: on PostgreSQL one per miss/allow (migrations 0015, 0012), on
    # SQLite one per window counting them all; those flagged ``evented`` also wrote an event.
    pending = (
        sql(
            "SELECT coalesce(sum(count - CASE WHEN evented THEN 1 ELSE 0 END), 0) "
            "FROM audit_miss_rows"
        )[0][0]
        + sql(
            "SELECT coalesce(sum(count - CASE WHEN evented THEN 1 ELSE 0 END), 0) "
            "FROM audit_key_allows"
        )[0][0]
    )
    return events + folded + pending
