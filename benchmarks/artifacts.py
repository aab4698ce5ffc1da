"""Artifact engine throughput against `cp` on the same disk.

    python -m benchmarks.artifacts [--quick] [--dir DIR]

Cases, each the way the runner does it: store a large file while a job runs (`scan` that
stores each new file in the read that hashes it, then `push`; fresh store, fresh stat
cache); the final sync of a finished job (`scan` with a settled stat cache, then `push`
moving the file into the store); re-store it unchanged (stat cache warm); the same two for
10,000 files of 1 KiB; `place` the large file back (verified copy). Each is timed after a
warm-up run, `--runs` times (1 with `--quick`), each run after a `sync`: what is measured is
the copy into the page cache, not the disk's write-back of the previous run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dstack.storage.local import LocalBlobStore
from dstack.storage.manifests import scan
from dstack.storage.statcache import StatCache
from dstack.storage.transfer import place, push

Timed = Callable[[], object]


def timings(setup: Timed, action: Timed, runs: int) -> list[float]:
    """Seconds of `action` per run, each after `setup` and a `sync` (untimed: every run, `cp`'s
    too, starts with no dirty pages, so none pays for the write-back of the one before); one
    untimed warm-up."""
    results = []
    for index in range(runs + 1):
        setup()
        os.sync()
        start = time.perf_counter()
        action()
        if index:
            results.append(time.perf_counter() - start)
    return results


def row(name: str, runs: list[float], baseline: float | None, unit: str = "s") -> str:
    median = statistics.median(runs)
    span = f"{min(runs):.3f}-{max(runs):.3f}"
    ratio = f"{baseline / median:6.0%}" if baseline else "      "
    base = f"{baseline:.3f}" if baseline else "-"
    return f"{name:<38} {median:8.3f} {unit}  {span:>14}  {base:>8}  {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to work (same disk)")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    big_mib, small_count = (16, 500) if args.quick else (1024, 10_000)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="dstack-bench-") as tmp:
        run_all(Path(tmp), big_mib=big_mib, small_count=small_count, runs=runs)


def run_all(work: Path, *, big_mib: int, small_count: int, runs: int) -> None:
    big = work / "big" / "data.bin"
    big.parent.mkdir()
    with big.open("wb") as out:
        for _ in range(big_mib):
            out.write(os.urandom(1024 * 1024))
    os.utime(big, ns=(time.time_ns() - 10**9,) * 2)  # not "racily clean"
    small = work / "small"
    for i in range(small_count):
        path = small / f"d{i % 100}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1024))
    blobs = work / "blobs"
    job = work / "job"
    store = LocalBlobStore(blobs)
    cache = StatCache(None)
    copy = work / "copy.bin"

    def fresh_store() -> None:
        shutil.rmtree(blobs, ignore_errors=True)
        copy.unlink(missing_ok=True)
        nonlocal cache
        cache = StatCache(None)

    def fresh_job(source: Path) -> Callable[[], None]:
        """A fresh store and a job dir holding a copy of `source` (as a job leaves it)."""

        def setup() -> None:
            fresh_store()
            shutil.rmtree(job, ignore_errors=True)
            job.mkdir()
            _cp(source, job / source.name)
            cache.settle()  # the job's processes are gone

        return setup

    def ingest(path: Path | str, st: os.stat_result) -> str:
        return store.ingest(path, st)[0]

    def sync(root: Path, *, move: bool = False) -> None:
        manifest = scan(root, "out", within=work, stat_cache=cache, ingest=None if move else ingest)
        push(manifest, root, store, move=move, stat_cache=cache)

    manifest = scan(big, "data.bin", within=work)
    cp = timings(fresh_store, lambda: _cp(big, copy), runs)
    cp_median = statistics.median(cp)
    print(f"{'case':<38} {'median':>10}  {'min-max':>14}  {'baseline':>8}  ratio")
    print(row(f"cp {big_mib} MiB (baseline)", cp, None))
    stored = timings(fresh_store, lambda: sync(big), runs)
    print(row(f"scan+push {big_mib} MiB", stored, cp_median))
    again = statistics.median(timings(lambda: None, lambda: sync(big), runs))
    print(f"{f're-push unchanged {big_mib} MiB':<38} {again:8.3f} s  ", end="")
    print(f"= {again / statistics.median(stored):.1%} of scan+push")
    moved = timings(fresh_job(big), lambda: sync(job / big.name, move=True), runs)
    print(row(f"final sync (move) {big_mib} MiB", moved, cp_median))
    small_runs = timings(fresh_store, lambda: sync(small), runs)
    print(row(f"scan+push {small_count} x 1 KiB", small_runs, None))
    print(f"{'':<38} {small_count / statistics.median(small_runs):8.0f} files/s")
    small_moved = timings(fresh_job(small), lambda: sync(job / small.name, move=True), runs)
    print(row(f"final sync (move) {small_count} x 1 KiB", small_moved, None))
    print(f"{'':<38} {small_count / statistics.median(small_moved):8.0f} files/s")
    push(manifest, big, store)

    def unplace() -> None:
        copy.unlink(missing_ok=True)

    placed = timings(unplace, lambda: place(manifest, copy, store), runs)
    print(row(f"place {big_mib} MiB", placed, cp_median))


def _cp(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)


if __name__ == "__main__":
    main()
