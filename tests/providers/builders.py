"""Workflows built directly, as `dstack.config` would build them, and a way to run jobs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from dstack.models.job import JobSpec
from dstack.models.workflow import SourceLocation, WorkflowSpec

SOURCE = SourceLocation(file=".dstack/workflows.yaml", line=3)


def workflow(provider: str, name: str = "train", **fields: Any) -> WorkflowSpec:
    return WorkflowSpec(name=name, provider=provider, source=SOURCE, **fields)


def run_commands(spec: JobSpec, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a job's commands with bash, as one script, the way a runner would; return stdout."""
    script = "set -e\n" + "\n".join(spec.commands)
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd / spec.working_dir,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **spec.env, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
