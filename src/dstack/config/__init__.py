"""`.dstack/*.yaml` → `WorkflowSpec`: file loading, variables, interpolation, normalization.

The only place in the project where raw YAML dicts exist. Pure: no server, no network.

The names below are imported when first used: `dstack.config.files` (finding the `.dstack/`
folder, listing its workflow files) stays light for `dstack run`, which looks at the files
before it imports the planner, pydantic's workflow models and the rest of this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dstack.config.files import find_dstack_root
    from dstack.config.repo_config import RepoConfig, WorkflowEntry, load_config
    from dstack.config.resolve import ResolvedWorkflow, resolve_workflow
    from dstack.config.variables import Variable

__all__ = [
    "RepoConfig",
    "ResolvedWorkflow",
    "Variable",
    "WorkflowEntry",
    "find_dstack_root",
    "load_config",
    "resolve_workflow",
]

_WHERE = {
    "RepoConfig": "repo_config",
    "ResolvedWorkflow": "resolve",
    "Variable": "variables",
    "WorkflowEntry": "repo_config",
    "find_dstack_root": "files",
    "load_config": "repo_config",
    "resolve_workflow": "resolve",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
