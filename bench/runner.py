"""Interleaved timing: every round runs each case once, in a rotating order.

Running the candidate and its baseline alternately, round after round, puts
both under the same machine noise (other processes, CPU frequency, page
cache), which a "run A 30 times, then B 30 times" scheme does not.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

Case = Callable[[], None]


def interleave(
    cases: dict[str, Case],
    *,
    runs: int,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each case, ``runs`` samples each, taken round-robin."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        # Rotate who goes first so no case always runs right after another.
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            cases[name]()
            samples[name].append(time.perf_counter() - t0)
        if progress is not None and (i + 1) % 10 == 0:
            progress(f"  {i + 1}/{runs} rounds")
    return samples


def command(
    argv: Sequence[str],
    *,
    env: dict | None = None,
    input: bytes | None = None,
    check: Callable[[subprocess.CompletedProcess], None] | None = None,
    timeout: float = 30,
) -> Case:
    """A case that runs one process to completion (output captured, then checked)."""

    def run() -> None:
        r = subprocess.run(list(argv), env=env, input=input, capture_output=True, timeout=timeout)
        if check is not None:
            check(r)
        elif r.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr[-500:]!r}")

    return run
