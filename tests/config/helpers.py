"""Write a `.dstack/` folder into a temp dir and resolve its workflows."""

from __future__ import annotations

from pathlib import Path

from dstack.config import ResolvedWorkflow, load_config, resolve_workflow


def write_repo(root: Path, workflows: str, variables: str | None = None) -> Path:
    (root / ".dstack").mkdir(parents=True, exist_ok=True)
    (root / ".dstack" / "workflows.yaml").write_text(workflows)
    if variables is not None:
        (root / ".dstack" / "variables.yaml").write_text(variables)
    return root


def resolve(
    root: Path, workflows: str, name: str = "w", argv: list[str] | None = None, **kw: str
) -> ResolvedWorkflow:
    write_repo(root, workflows, kw.get("variables"))
    return resolve_workflow(load_config(root), name, argv or [])
