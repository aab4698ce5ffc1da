"""`.dstack/*.yaml` → `WorkflowSpec`: file loading, variables, interpolation, normalization.

The only place in the project where raw YAML dicts exist. Pure: no server, no network.
"""

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
