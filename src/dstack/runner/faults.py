"""Pause points for the fault-injection tests (`tests/faults/`); inert everywhere else.

Some phases of a job last milliseconds (between a claim and the first report, between
storing a sync's blobs and posting its manifest): a test cannot hit them by polling. A runner
whose environment names a hooks folder (`DSTACK_RUNNER_FAULT_HOOKS`, which only that suite
sets) stops at a named point while the file `pause-<point>` exists there, after creating
`at-<point>-<job id>`: the test sees the marker, kills a process, then removes the gate. The
environment is read at each call (by `dstack.settings.fault_hooks`), never at import; without
the variable a call only looks it up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from dstack.settings import fault_hooks

MAX_PAUSE = 60.0
"""Seconds a point waits at most: a test that forgot its gate does not hang the runner."""

POINTS = ("claim", "checkout", "deps", "sync", "upload", "final")
"""claim: a job was claimed, nothing reported yet. checkout: `downloading` is on its way, the
code not fetched. deps: the first dependency artifact was placed, the others not. sync: a
periodic sync stored its blobs, its manifest is not posted. upload: the same for the final
sync (files may have been moved into the store). final: every log line was shipped, the final
status not posted."""


def pause_point(point: str, job_id: str, environ: Mapping[str, str] = os.environ) -> None:
    """Wait here while the test's gate for `point` exists (see the module's docstring)."""
    folder = fault_hooks(environ)
    if folder is None:
        return
    gate = folder / f"pause-{point}"
    if not gate.exists():
        return
    (folder / f"at-{point}-{job_id}").touch()
    deadline = time.monotonic() + MAX_PAUSE
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
