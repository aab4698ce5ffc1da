"""The one check for paths that come from workflows, manifests and requests.

Three edges call it, each on its own: the CLI when it reads a workflow (`config/normalize.py`),
the server when a request carries a manifest or a job spec (the models below validate with
it, so a bad path is a 422), and the runner before it syncs or places anything
(`runner/paths.py`, `storage/transfer.py`).

Two kinds of path:

- A *declared* path: an artifact or cache path as a workflow writes it, also the `path` of a
  manifest. Relative to the job's working directory (`model`, `./data/`), under the job's
  home (`~/.cache/pip`) or absolute (`/output`: a folder of the container, which the runner
  maps to a folder inside the job's own directory). `.` components and one trailing `/` are
  allowed and normalized away; `..` components, empty components (`a//b`, `//etc`),
  backslashes, control characters (NUL included) and the bare root `/` are refused.
- An *entry* path: a file's place inside its artifact (`FileEntry.path`): `/`-separated
  names, each non-empty, neither `.` nor `..`, without backslashes or control characters;
  `""` for a single-file artifact. Exactly the form `scan` produces.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_PATH = 4096
"""Characters of any path (Linux's PATH_MAX)."""

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class PathError(ValueError):
    """A path that may not be used; the message says which path and why.

    A `ValueError`, so that pydantic turns it into a validation error (422 at the server).
    """


def normalize_declared(path: str) -> str:
    """The canonical form of a declared path: `model`, `~/.cache/pip`, `/output`, `~`, `.`
    (the working directory itself).

    Raises `PathError` for a path that is not allowed (see the module docstring).
    """
    _check_text(path, "artifact path")
    if path.startswith("/"):
        prefix, rest = "/", path[1:]
    elif path == "~" or path.startswith("~/"):
        prefix, rest = "~", path[2:]
    else:
        prefix, rest = "", path
    parts = _parts(path, rest.removesuffix("/"))
    if prefix == "~":
        return "/".join(["~", *parts])
    if not parts:
        if prefix == "/":
            raise PathError(f"artifact path {path!r} is the root of the filesystem")
        return "."
    return prefix + "/".join(parts)


def check_declared(path: str) -> str:
    """`path` unchanged when `normalize_declared` accepts it (for model validators)."""
    normalize_declared(path)
    return path


def check_entry(path: str) -> str:
    """`path` unchanged when it is a valid entry path (see the module docstring)."""
    if path == "":
        return path
    _check_text(path, "manifest entry")
    for name in path.split("/"):
        if name in ("", ".", ".."):
            raise PathError(
                f"manifest entry {path!r} is not a normalized relative path "
                "(empty, '.' or '..' component)"
            )
    return path


DeclaredPath = Annotated[str, AfterValidator(check_declared)]
"""A declared artifact or cache path, checked wherever a model carrying it is parsed."""

EntryPath = Annotated[str, AfterValidator(check_entry)]
"""A manifest entry path, checked wherever a manifest is parsed."""


def _check_text(path: str, what: str) -> None:
    if not path:
        raise PathError(f"{what} is empty")
    if len(path) > MAX_PATH:
        raise PathError(f"{what} {path[:40]!r}... is longer than {MAX_PATH} characters")
    if _BAD_CHARS.search(path):
        raise PathError(f"{what} {path!r} has a backslash or a control character")


def _parts(original: str, rest: str) -> list[str]:
    """The names of `rest`, `.` dropped; `..` and empty names refused."""
    if rest == "":
        return []
    parts: list[str] = []
    for name in rest.split("/"):
        if name == "..":
            raise PathError(f"artifact path {original!r} has a '..' component")
        if name == "":
            raise PathError(f"artifact path {original!r} has an empty component ('//')")
        if name != ".":
            parts.append(name)
    return parts
