"""`Trash`: a finished job's folder is out of the jobs' folder at once and gone once jobs
stop ending for a moment; what an earlier run left is removed when the runner starts."""

from __future__ import annotations

import time
from pathlib import Path

from dstack.runner.trash import Trash


def _job_dir(jobs: Path, name: str) -> Path:
    folder = jobs / name
    (folder / "code" / ".git").mkdir(parents=True)
    (folder / "code" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "venv").mkdir()
    (folder / "venv" / "python").symlink_to("/usr/bin/python3")
    return folder


def _gone(path: Path, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_finished_jobs_folder_leaves_at_once_and_is_removed_after_the_burst(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs"
    trash = Trash(jobs / ".trash", settle=0.05)
    first, second = _job_dir(jobs, "j1"), _job_dir(jobs, "j2")

    trash.put(first)
    trash.put(second)
    trash.put(jobs / "never-made")  # already gone: nothing to do

    assert not first.exists()
    assert not second.exists()
    assert _gone(jobs / ".trash" / "j1")
    assert _gone(jobs / ".trash" / "j2")
    assert sorted(p.name for p in jobs.iterdir()) == [".trash"]


def test_what_an_earlier_run_left_in_the_trash_is_removed(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    left = _job_dir(jobs / ".trash", "j0")
    (jobs / ".trash" / "half-written").write_text("x")

    Trash(jobs / ".trash", settle=0.01).empty_later()

    assert _gone(left)
    assert _gone(jobs / ".trash" / "half-written")
