"""Glob patterns of `triggers`/`inputs` over repository paths."""

from __future__ import annotations

import pytest

from dstack.repo.patterns import matches_any


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("requirements.txt", "requirements.txt"),
        ("src/**/*.py", "src/a.py"),
        ("src/**/*.py", "src/x/y/b.py"),
        ("**/*.py", "train.py"),
        ("**/*.py", "a/b/train.py"),
        ("data/", "data/x/y.csv"),
        ("data", "data/y.csv"),
        ("data/**", "data/x/y.csv"),
        ("./data/*.csv", "data/y.csv"),
        ("/setup.py", "setup.py"),
        ("src/*", "src/pkg/mod.py"),  # a matching folder takes everything under it
        ("conf/?.yaml", "conf/a.yaml"),
        ("conf/[ab].yaml", "conf/b.yaml"),
        ("conf/[!ab].yaml", "conf/c.yaml"),
    ],
)
def test_matches(pattern: str, path: str) -> None:
    assert matches_any(path, [pattern])


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("requirements.txt", "sub/requirements.txt"),
        ("src/**/*.py", "tests/a.py"),
        ("src/**/*.py", "src/a.pyc"),
        ("*.py", "src/a.py"),
        ("data/", "database/x.csv"),
        ("data", "other/data/x.csv"),
        ("conf/?.yaml", "conf/ab.yaml"),
        ("conf/[!ab].yaml", "conf/a.yaml"),
        ("a.b", "axb"),
    ],
)
def test_does_not_match(pattern: str, path: str) -> None:
    assert not matches_any(path, [pattern])


def test_any_of_several_patterns() -> None:
    assert matches_any("b.txt", ["a.txt", "b.txt"])
    assert not matches_any("c.txt", ["a.txt", "b.txt"])
    assert not matches_any("c.txt", [])
