"""`dstack ps` and `dstack rm -a` through the real CLI: scoped to the current repository,
REPO and USER columns where a listing holds several, tagged runs kept, the space freed said."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from dstack.cli.render import size
from dstack.cli.scope import current_repo_id

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Env

WORKFLOWS = """
workflows:
  - name: small
    provider: bash
    commands: [mkdir -p out, printf 'a%.0s' $(seq 1000) > out/a.bin]
    artifacts: [out]
  - name: tagged
    provider: bash
    commands: [mkdir -p out, printf 'b%.0s' $(seq 2000) > out/b.bin]
    artifacts: [out]
  - name: large
    provider: bash
    commands: [mkdir -p out, printf 'c%.0s' $(seq 3000) > out/c.bin]
    artifacts: [out]
"""


def test_rm_all_skips_tagged_runs_goes_on_and_says_what_it_frees(process_env: Env) -> None:
    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()
    names = {}
    for workflow in ("small", "tagged", "large"):  # listed newest first: the tagged one between
        assert env.dstack("run", workflow).code == 0
        names[workflow] = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    assert env.dstack("tags", "add", "v1", names["tagged"]).code == 0

    removed = env.dstack("rm", "-a", "-y")

    assert removed.code == 0, removed
    assert removed.err == f"Skipping 1 tagged run(s): {names['tagged']} (v1)" + (
        " (`dstack tags delete TAG` first)\n"
    )
    freed = size(1000 + 3000)  # the code is shared with the tagged run: not freed
    assert removed.out == (
        f"Removed {names['large']}\nRemoved {names['small']}\n"
        f"2 runs removed; {freed} will be freed within 1 hour (garbage collection)\n"
    )
    left = [run["name"] for run in json.loads(env.dstack("ps", "-a", "--json").out)]
    assert left == [names["tagged"]]
    assert env.dstack("rm", "-a", "-y").out == "No finished runs to remove.\n"


def test_ps_and_rm_stay_in_the_current_repository_unless_all_repos(
    process_env: Env, tmp_path: Path
) -> None:
    env = process_env
    other = tmp_path / "other"
    other.mkdir()
    env.git("init", "-q", str(other))
    mine = env.dstack("run", "bash", "-c", "echo mine")
    theirs = env.dstack("run", "bash", "-c", "echo theirs", cwd=other)
    assert (mine.code, theirs.code) == (0, 0), (mine, theirs)

    here = env.dstack("ps", "-a")
    every = env.dstack("ps", "-a", "--all-repos")

    assert here.code == 0, here
    assert here.out.splitlines()[0].split()[:2] == ["RUN", "WORKFLOW"]
    assert len(re.findall(r"^\S+-\d+ ", here.out, re.MULTILINE)) == 1
    assert every.code == 0, every
    header = every.out.splitlines()[0].split()
    assert header[:3] == ["RUN", "REPO", "WORKFLOW"]  # one user: no USER column
    ids = {current_repo_id(env.repo), current_repo_id(other)}
    assert {repo_id[:14] for repo_id in ids} <= set(every.out.split()), every.out
    removed_here = env.dstack("rm", "-a", "-y")
    assert removed_here.code == 0, removed_here
    assert re.search(r"^1 run removed; ", removed_here.out, re.M), removed_here.out
    left = json.loads(env.dstack("ps", "-a", "--all-repos", "--json").out)
    assert [run["repo"]["repo_id"] for run in left] == [current_repo_id(other)]
    theirs_name = left[0]["name"]
    assert env.dstack("run", "bash", "-c", "echo mine again").code == 0
    removed = env.dstack("rm", "-a", "-y", "--all-repos")
    assert removed.code == 0, removed
    assert theirs_name in removed.out
    # The other repository has no commit: its run's code is a diff blob of its own.
    assert re.search(r"^2 runs removed; \d+ B will be freed within 1 hour", removed.out, re.M)
    assert json.loads(env.dstack("ps", "-a", "--all-repos", "--json").out) == []


def test_rm_of_one_run_says_what_it_frees_and_rm_all_asks_at_a_terminal(
    process_env: Env,
) -> None:
    from tests.e2e.test_run_path import Terminal

    env = process_env
    env.workflows(WORKFLOWS)
    env.commit()
    names = []
    for workflow in ("small", "large"):
        assert env.dstack("run", workflow).code == 0
        names.append(json.loads(env.dstack("ps", "--json").out)[0]["name"])

    one = env.dstack("rm", names[0])
    asked = Terminal(env, "rm", "-a")
    asked.expect(rf"Remove 1 run\(s\): {names[1]}\? \[y/N\]")
    asked.send("n\n")
    refused = asked.finish()
    left = [run["name"] for run in json.loads(env.dstack("ps", "-a", "--json").out)]

    assert one.code == 0, one
    assert one.out == (
        f"Removed {names[0]}\n1 run removed; {size(1000)} will be freed within 1 hour"
        " (garbage collection)\n"
    )
    assert refused == 1  # declined: nothing done (Ctrl+C would be 130)
    assert "Nothing changed." in asked.text()
    assert "Removed" not in asked.text()
    assert left == [names[1]]
