"""S4, S5: a job's artifact stored, through the CLI on the process executor.

"Until stored" is from `dstack run` start to the command's exit: the run ends only after
the runner's final artifact sync, so that is when the artifact is in the blob store. The
job copies prepared data from outside the repository (so no sample pays for making random
bytes), and each sample stores new content (a nonce is appended), so nothing is deduplicated.

The baselines are that copy alone, to a file (S5: a folder) that is kept, as the store keeps
what it stored; `dstack cp` back is held to a `cp` whose copy is deleted before the next, as
its own is. Samples are taken in turn with dstack's, each after the disk's write-back is
flushed (`sample_in_turn`): this machine's disk writes back far slower than the page cache
takes writes, so which block of samples came after which would otherwise decide more than
what each sample does.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Budget, Row, median, quiet, sample_in_turn
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import BenchError


def big_file(bench: Bench) -> list[Row]:
    """S4: a job writes a large file as its artifact; then `dstack cp` brings it back."""
    mib = bench.sizes.big_mib
    with bench.workspace() as ws:
        source = ws.root / "data" / "big.bin"
        _random_file(source, mib)
        ws.workflows(
            f"""
            workflows:
              - name: big
                provider: bash
                commands:
                  - mkdir -p out && cp {source} out/big.bin && date +%s%N >> out/big.bin
                artifacts: [out]
            """
        )
        ws.dstack("run", "big")
        run = ws.newest_run()
        target = ws.root / "back.bin"
        copy = ws.root / "copy.bin"
        kept = _Kept(ws.root)
        timed = sample_in_turn(
            {
                "stored": (lambda: ws.dstack("run", "big", "--reload"), None),
                "back": (
                    lambda: ws.dstack("cp", run, "out/big.bin", str(target)),
                    lambda: target.unlink(missing_ok=True),
                ),
                "cp": (
                    lambda: quiet(["cp", str(source), str(copy)]),
                    lambda: copy.unlink(missing_ok=True),
                ),
                "cp, kept": (lambda: quiet(["cp", str(source), str(kept.new())]), None),
            },
            runs=bench.sizes.runs,
            settle_disk=True,
        )
        if target.stat().st_size <= source.stat().st_size:
            raise BenchError("dstack cp brought back a file smaller than the one stored")
    name = f"{mib:,} MiB" if mib < 1024 else f"{mib // 1024} GiB"
    cp = median(timed["cp"])
    return [
        Row(
            "S4",
            f"{name} artifact stored",
            timed["stored"],
            baseline=median(timed["cp, kept"]),
            baseline_name="cp, kept",
            budget=Budget(1.5, times_baseline=True),
        ),
        Row(
            "S4",
            f"dstack cp {name} back",
            timed["back"],
            baseline=cp,
            baseline_name="cp",
            budget=Budget(1.5, times_baseline=True),
        ),
    ]


def many_files(bench: Bench) -> list[Row]:
    """S5: a job writes many 1 KiB files as its artifact."""
    count = bench.sizes.small_files
    with bench.workspace() as ws:
        source = ws.root / "data" / "files"
        ws.workflows(
            f"""
            workflows:
              - name: files
                provider: bash
                commands:
                  - rm -rf out && mkdir -p out && cp -r {source} out/files
                artifacts: [out]
            """
        )
        kept = _Kept(ws.root)
        timed = sample_in_turn(
            {
                "stored": (
                    lambda: ws.dstack("run", "files", "--reload"),
                    lambda: _random_files(source, count),
                ),
                "cp": (lambda: quiet(["cp", "-r", str(source), str(kept.new())]), None),
            },
            runs=bench.sizes.runs,
            settle_disk=True,
        )
    return [
        Row(
            "S5",
            f"{count:,} x 1 KiB artifact stored",
            timed["stored"],
            baseline=median(timed["cp"]),
            baseline_name="cp -r, kept",
            budget=Budget(2.0 * count / 10_000),
        ),
    ]


class _Kept:
    """Fresh paths for copies that are kept, as the store keeps its blobs: a
    baseline whose copy is deleted before the next sample never pays for its bytes reaching
    the disk, which on this machine's disk is most of the cost of storing them."""

    def __init__(self, parent: Path) -> None:
        # A folder of its own: quick mode shares one workspace between scenarios.
        self._folder = Path(tempfile.mkdtemp(prefix="kept-", dir=parent))
        self._count = itertools.count()

    def new(self) -> Path:
        return self._folder / str(next(self._count))


def _random_file(path: Path, mib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1024 * 1024))
    # Older than a second, so no stat cache takes it for "racily clean".
    os.utime(path, ns=(time.time_ns() - 10**9,) * 2)


def _random_files(folder: Path, count: int) -> None:
    """`count` new random 1 KiB files in 100 subfolders (content differs every call)."""
    shutil.rmtree(folder, ignore_errors=True)
    for index in range(count):
        path = folder / f"d{index % 100}" / f"f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1024))
