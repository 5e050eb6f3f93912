"""Figures of the security/reliability suites, merged into $JIT_SECURITY_REPORT (JSON) if set."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


def record(**figures: object) -> None:
    """Merge ``figures`` into the report file; numbers under the same key are added up."""
    target = os.environ.get("JIT_SECURITY_REPORT")
    if not target:
        return
    path = Path(target)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        for key, value in figures.items():
            old = data.get(key)
            if isinstance(old, int | float) and isinstance(value, int | float):
                value = old + value
            data[key] = value
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
