"""Glob patterns over repository paths, as `triggers` and `inputs` of a workflow use them.

Paths are relative to the repository root and use ``/``. A pattern matches a file when it
matches the file's path or one of its folders, so ``data``, ``data/`` and ``data/**`` all
mean "everything under data". ``*`` and ``?`` stay inside one path segment, ``**`` spans any
number of them (``src/**/*.py`` matches ``src/a.py`` and ``src/x/y/b.py``), ``[abc]`` is a
character class. A leading ``/`` or ``./`` is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    """Whether the file ``path`` (or a folder above it) matches one of ``patterns``."""
    candidates = _self_and_parents(path)
    return any(_compile(p).fullmatch(c) for p in patterns for c in candidates)


def _self_and_parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip()
    pattern = pattern.removeprefix("./").lstrip("/")
    pattern = pattern.rstrip("/")
    if pattern.endswith("/**"):
        pattern = pattern[:-3]  # "everything below" is what matching a folder already means
    return re.compile(_translate(pattern))


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
