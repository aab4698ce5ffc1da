"""Lays out the files of the compatibility corpus (`shared/compat-corpus`) as temp repositories."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "compat-corpus"

_SOURCE_ROW = re.compile(r"^\| `(?P<saved>[^`]+)` \| `[^`]+` \| `[0-9a-f]+` \| (?P<date>[\d-]+) \|")
_DSTACK_DIR = r"(?P<dir>(?:.*/)?\.dstack_?)"
_WORKFLOWS = re.compile(_DSTACK_DIR + r"/workflows(?:@[0-9a-f]{8})?\.ya?ml$")
_WORKFLOWS_DIR = re.compile(_DSTACK_DIR + r"/workflows/(?P<name>[^/@]+)(?:@[0-9a-f]{8})?\.ya?ml$")
_VARIABLES = re.compile(_DSTACK_DIR + r"/variables(?:@[0-9a-f]{8})?\.ya?ml$")
_PROVIDERS = re.compile(_DSTACK_DIR + r"/providers(?:@[0-9a-f]{8})?\.ya?ml$")
_OUTSIDE = re.compile(r"(?P<dir>.*)/dstack\.yaml$")  # a workflows file kept outside .dstack/
_SNIPPETS = "dstackai__dstack/_docs-snippets/"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Case:
    """One corpus file and the files laid out with it: {path in temp repo: corpus file}."""

    name: str
    layout: dict[str, Path]


def _dates() -> dict[str, str]:
    text = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    return {m["saved"]: m["date"] for m in map(_SOURCE_ROW.match, text.splitlines()) if m}


def _latest(
    files: list[str], pattern: re.Pattern[str], folder: str, rel: str, dates: dict[str, str]
) -> str | None:
    date, commit = dates.get(rel, "9999"), rel.split("@")[-1]
    """The file of that kind in ``folder`` from the same commit, else the newest one before."""
    candidates = [
        f
        for f in files
        if (m := pattern.match(f)) and m["dir"] == folder and dates.get(f, "") <= date
    ]
    same_commit = [f for f in candidates if f.split("@")[-1] == commit]
    if same_commit:
        return same_commit[0]
    return max(candidates, key=lambda f: (dates.get(f, ""), f), default=None)


def cases() -> list[Case]:
    """Every workflows and variables file of the corpus, as a repository layout."""
    files = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.yaml"))
    dates = _dates()
    result = []
    for rel in files:
        if rel.startswith(_SNIPPETS):
            result.append(_snippet_case(rel))
        elif case := _repo_case(rel, files, dates):
            result.append(case)
    return result


def _snippet_case(rel: str) -> Case:
    text = (CORPUS / rel).read_text(encoding="utf-8")
    is_variables = re.search(r"^variables:", text, re.M) and not re.search(
        r"^workflows:", text, re.M
    )
    target = ".dstack/variables.yaml" if is_variables else ".dstack/workflows.yaml"
    return Case(rel, {target: CORPUS / rel})


def _repo_case(rel: str, files: list[str], dates: dict[str, str]) -> Case | None:
    if m := _WORKFLOWS_DIR.match(rel):
        layout = {f".dstack/workflows/{m['name']}.yaml": CORPUS / rel}
    elif m := (_WORKFLOWS.match(rel) or _OUTSIDE.match(rel)):
        layout = {".dstack/workflows.yaml": CORPUS / rel}
    elif m := _VARIABLES.match(rel):
        return Case(rel, {".dstack/variables.yaml": CORPUS / rel})
    else:
        return None  # providers, configs, templates, recipes: read only alongside workflows
    for pattern, target in ((_VARIABLES, "variables"), (_PROVIDERS, "providers")):
        found = _latest(files, pattern, m["dir"], rel, dates)
        if found:
            layout[f".dstack/{target}.yaml"] = CORPUS / found
    return Case(rel, layout)


def lay_out(case: Case, root: Path) -> Path:
    for target, source in case.layout.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / target)
    return root
