"""`python -m benchmarks [--quick] [--only S1,S4] [--json out.json] [--runs N] [--dir DIR]
[--db sqlite,postgres] [--peers dvc,snakemake,metaflow]`

Runs the scenarios (each in its own temp repository and DSTACK_HOME, local server warm
before timing and stopped after) and prints one table: median, min-max, baseline, ratio,
budget, pass/miss. With `--peers`, S1-S5 (or those of `--only`) run through dstack and each
named peer, interleaved; a peer's row has dstack's median as its baseline. Exits 0 even
when a budget is missed (that is a finding, not a failure); exits 1 when a scenario could
not be measured at all; a peer that could not be installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import peers
from benchmarks.harness import Row, table
from benchmarks.scenarios import SCENARIOS, Bench, Sizes
from benchmarks.teamserver import parse_databases


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        chosen = _chosen(args.only)
        databases = parse_databases(args.db)
        names = peers.parse(args.peers) if args.peers is not None else None
        if names is not None:
            chosen = _peer_scenarios(args.only, chosen)
    except ValueError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    sizes = Sizes.quick() if args.quick else Sizes.full(runs=args.runs)
    bench = Bench(sizes, work_dir=args.dir, shared=args.quick, databases=tuple(databases))
    rows: list[Row] = []
    broken: list[str] = []
    skipped: list[str] = []
    try:
        if names is not None:
            rows, skipped = peers.compare(bench, names, chosen, broken)
        else:
            for key in chosen:
                rows += _measure(key, bench, broken)
    finally:
        bench.close()
    if args.quick:  # budgets are stated for the full sizes
        for row in rows:
            row.budget = None
    print(table(rows))
    for note in skipped:
        print(f"- {note}")
    if args.json:
        payload = {
            "quick": args.quick,
            "rows": [r.as_json() for r in rows],
            "broken": broken,
            "peers_skipped": skipped,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if broken else 0


def _measure(key: str, bench: Bench, broken: list[str]) -> list[Row]:
    """The rows of one scenario; on an exception, none (the scenario is listed as broken)."""
    print(f"{key} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        return SCENARIOS[key](bench)
    except Exception:
        broken.append(key)
        print(f"{key} could not be measured:\n{traceback.format_exc()}", file=sys.stderr)
        return []
    finally:
        print(f"{key} took {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (CI)")
    parser.add_argument("--only", default="", help="comma-separated scenario ids, e.g. S1,S4")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (its disk)")
    parser.add_argument(
        "--db", default="sqlite", help="S7, S9, S10 on these databases: sqlite,postgres"
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"compare S1-S5 with these tools, each pip-installed into a temp venv "
        f"(comma-separated: {','.join(peers.KNOWN)})",
    )
    return parser


def _chosen(only: str) -> list[str]:
    if not only:
        return list(SCENARIOS)
    keys = [key.strip().upper() for key in only.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return keys


def _peer_scenarios(only: str, chosen: list[str]) -> list[str]:
    """The scenarios compared with peers: S1-S5, or those of them `--only` names."""
    if not only:
        return list(peers.SCENARIOS)
    others = [key for key in chosen if key not in peers.SCENARIOS]
    if others:
        raise ValueError(
            f"--peers compares {', '.join(peers.SCENARIOS)} only, not {', '.join(others)}"
        )
    return chosen


if __name__ == "__main__":
    sys.exit(main())
