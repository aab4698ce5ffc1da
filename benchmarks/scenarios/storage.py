"""S4, S5: a job's artifact stored, through the CLI on the process executor.

"Until stored" is from `dstack run` start to the command's exit: the run ends only after
the runner's final artifact sync, so that is when the artifact is in the blob store. The
job copies prepared data from outside the repository (so no sample pays for making random
bytes), and each sample stores new content (a nonce is appended), so nothing is deduplicated.
The baselines are that copy alone.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.harness import Budget, Row, median, quiet, sample
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
        stored = sample(lambda: ws.dstack("run", "big", "--reload"), runs=bench.sizes.runs)
        run = ws.newest_run()
        target = ws.root / "back.bin"
        copied = sample(
            lambda: ws.dstack("cp", run, "out/big.bin", str(target)),
            setup=lambda: target.unlink(missing_ok=True),
            runs=bench.sizes.runs,
        )
        if target.stat().st_size <= source.stat().st_size:
            raise BenchError("dstack cp brought back a file smaller than the one stored")
        copy = ws.root / "copy.bin"
        base = sample(
            lambda: quiet(["cp", str(source), str(copy)]),
            setup=lambda: copy.unlink(missing_ok=True),
            runs=bench.sizes.runs,
        )
    name = f"{mib:,} MiB" if mib < 1024 else f"{mib // 1024} GiB"
    cp = median(base)
    return [
        Row(
            "S4",
            f"{name} artifact stored",
            stored,
            baseline=cp,
            baseline_name="cp",
            budget=Budget(1.0 * mib / 1024),
        ),
        Row(
            "S4",
            f"dstack cp {name} back",
            copied,
            baseline=cp,
            baseline_name="cp",
            budget=Budget(0.6 * mib / 1024),
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
        stored = sample(
            lambda: ws.dstack("run", "files", "--reload"),
            setup=lambda: _random_files(source, count),
            runs=bench.sizes.runs,
        )
        copy = ws.root / "copy"
        base = sample(
            lambda: quiet(["cp", "-r", str(source), str(copy)]),
            setup=lambda: shutil.rmtree(copy, ignore_errors=True),
            runs=bench.sizes.runs,
        )
    return [
        Row(
            "S5",
            f"{count:,} x 1 KiB artifact stored",
            stored,
            baseline=median(base),
            baseline_name="cp -r",
            budget=Budget(2.0 * count / 10_000),
        ),
    ]


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
