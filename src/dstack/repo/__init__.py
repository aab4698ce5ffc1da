"""Git state of the working copy: what code a run records, and how a runner rebuilds it.

Everything goes through the `git` command line; git's own object hashes are the identity of
the code. Nothing here modifies the user's index, files or refs.
"""

from __future__ import annotations

from dstack.repo.bundle import BUNDLE_REF, create_bundle
from dstack.repo.command import EMPTY_TREE
from dstack.repo.materialize import materialize
from dstack.repo.remote_urls import normalize_remote_url, repo_id_for, sanitize_remote_url
from dstack.repo.state import RepoState, find_repo_root, read_repo_state
from dstack.repo.triggers import tree_of

__all__ = [
    "BUNDLE_REF",
    "EMPTY_TREE",
    "RepoState",
    "create_bundle",
    "find_repo_root",
    "materialize",
    "normalize_remote_url",
    "read_repo_state",
    "repo_id_for",
    "sanitize_remote_url",
    "tree_of",
]
