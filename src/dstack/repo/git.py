"""Git state of the working copy: the same public names as :mod:`dstack.repo`.

The work is done in a module per noun (``state``, ``bundle``, ``materialize``, ``triggers``;
``command`` runs git itself).
"""

from __future__ import annotations

from dstack.repo.bundle import BUNDLE_REF, create_bundle
from dstack.repo.changes import changed_paths
from dstack.repo.command import EMPTY_TREE
from dstack.repo.materialize import materialize
from dstack.repo.state import RepoProbe, RepoState, find_repo_root, probe_repo, read_repo_state
from dstack.repo.triggers import tree_of

__all__ = [
    "BUNDLE_REF",
    "EMPTY_TREE",
    "RepoProbe",
    "RepoState",
    "changed_paths",
    "create_bundle",
    "find_repo_root",
    "materialize",
    "probe_repo",
    "read_repo_state",
    "tree_of",
]
