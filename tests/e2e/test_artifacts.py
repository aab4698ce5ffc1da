"""Artifacts, dependency artifacts, caching, tags and the artifact commands, through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.e2e.conftest import Env

CHAIN = """
workflows:
  - name: prepare
    provider: bash
    commands:
      - mkdir -p data
      - echo "rows 42" > data/rows.txt
      - echo "prepared"
    artifacts: [data]
    triggers: [prepare.sh]
  - name: train
    provider: bash
    deps:
      - workflow: prepare
    commands:
      - mkdir -p model
      - cat data/rows.txt
      - bash train.sh > model/weights.txt
      - echo "trained"
    artifacts: [model]
    triggers: [train.sh]
  - name: evaluate
    provider: bash
    deps:
      - workflow: train
    commands:
      - echo "score from $(cat model/weights.txt)"
"""


def _chain(env: Env) -> None:
    env.workflows(CHAIN)
    env.write("prepare.sh", "echo unused\n")
    env.write("train.sh", "echo weights-v1\n")
    env.commit()


def _newest_run(env: Env) -> dict[str, Any]:
    runs = json.loads(env.dstack("ps", "-a", "--json").out)
    return env.run_json(runs[0]["name"])


def _jobs(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {j["workflow_name"]: j for j in run["jobs"]}


def test_chain_passes_artifacts_and_reruns_only_what_changed(env: Env, tmp_path: Path) -> None:
    _chain(env)

    first = env.dstack("run", "evaluate")

    assert first.code == 0, first
    assert "rows 42" in first.out
    assert "score from weights-v1" in first.out
    run1 = _newest_run(env)
    listed = env.dstack("ls", run1["name"], "-r")
    assert "data/rows.txt" in listed.out
    assert "model/weights.txt" in listed.out
    copied = env.dstack("cp", run1["name"], "model", str(tmp_path / "out"))
    assert copied.code == 0, copied
    assert (tmp_path / "out" / "weights.txt").read_text() == "weights-v1\n"

    again = env.dstack("run", "evaluate", "--explain")

    assert again.code == 0, again
    assert "score from weights-v1" in again.out  # evaluate has no artifacts: it always runs
    assert "prepared" not in again.out
    assert "trained" not in again.out
    assert f"cached (from run {run1['name']})" in again.err
    jobs = _jobs(_newest_run(env))
    assert jobs["prepare"]["reason"] == "cached"
    assert jobs["train"]["reused_from"] == run1["name"]

    env.write("train.sh", "echo weights-v2\n")  # uncommitted: the job sees it all the same
    changed = env.dstack("run", "evaluate")

    assert changed.code == 0, changed
    assert "prepared" not in changed.out
    assert "trained" in changed.out
    assert "score from weights-v2" in changed.out
    shown = env.dstack("ps", _newest_run(env)["name"])  # why each job ran, kept with the run
    assert "why train ran: code changed (" in shown.out
    assert "why evaluate ran: not cacheable: no artifacts" in shown.out
    assert "why prepare ran" not in shown.out

    forced = env.dstack("run", "--reload", "evaluate")
    assert "prepared" in forced.out
    assert "trained" in forced.out


def test_plan_explains_cache_decisions(process_env: Env) -> None:
    _chain(process_env)
    before = process_env.dstack("plan", "evaluate")
    assert before.code == 0, before
    assert "no earlier run" in before.out
    assert process_env.dstack("run", "train").code == 0

    after = process_env.dstack("plan", "evaluate")

    assert after.code == 0, after
    cache = after.out.split("Cache:\n", 1)[1].split("\n\n", 1)[0]
    lines = {line.split()[0]: line for line in cache.splitlines()}
    assert "cached (from run" in lines["prepare"]
    assert "cached (from run" in lines["train"]
    assert "no artifacts" in lines["evaluate"]


def test_tags_feed_dependencies(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    env.workflows(
        """
        workflows:
          - name: make
            provider: bash
            commands: [mkdir -p out, echo "made" > out/thing.txt]
            artifacts: [out]
          - name: use-tag
            provider: bash
            deps:
              - tag: v1
            commands: [cat out/thing.txt]
          - name: use-upload
            provider: bash
            deps:
              - :upload
            commands: [cat mydata/hello.txt]
          - name: use-missing
            provider: bash
            deps:
              - tag: nope
            commands: [echo never]
        """
    )
    env.commit()
    assert env.dstack("run", "-t", "v1", "make").code == 0
    listed = env.dstack("tags", "list")
    assert "v1" in listed.out

    used = env.dstack("run", "use-tag")
    assert used.code == 0, used
    assert "made" in used.out

    local = tmp_path / "mydata"
    local.mkdir()
    (local / "hello.txt").write_text("hello from a local folder\n")
    added = env.dstack("tags", "add", "upload", "-a", str(local))
    assert added.code == 0, added
    from_upload = env.dstack("run", "use-upload")
    assert from_upload.code == 0, from_upload
    assert "hello from a local folder" in from_upload.out

    runs_before = json.loads(env.dstack("ps", "-a", "--json").out)
    missing = env.dstack("run", "use-missing")
    assert missing.code == 1
    assert "nope" in missing.err
    assert json.loads(env.dstack("ps", "-a", "--json").out) == runs_before

    assert env.dstack("tags", "delete", "-y", "v1").code == 0
    assert "v1" not in env.dstack("tags", "list").out


def test_stopped_job_keeps_the_artifacts_written_so_far(env: Env) -> None:
    env.workflows(
        """
        workflows:
          - name: long
            provider: bash
            commands:
              - mkdir -p ckpt
              - echo "epoch 1" > ckpt/epoch-1.txt
              - echo checkpointed
              - sleep 600
            artifacts: [ckpt]
        """
    )
    env.commit()
    assert env.dstack("run", "-d", "long").code == 0
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    deadline = time.monotonic() + 60
    while "checkpointed" not in env.dstack("logs", name).out:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert env.dstack("stop", "-x", name).code == 0
    env.wait_for(name, {"aborted", "stopped", "failed"})

    assert "ckpt/epoch-1.txt" in env.dstack("ls", name, "-r").out


def test_corrupt_blob_is_detected_and_named(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    env.workflows(
        """
        workflows:
          - name: write
            provider: bash
            commands: [mkdir -p out, echo "precious" > out/file.txt]
            artifacts: [out]
        """
    )
    env.commit()
    assert env.dstack("run", "write").code == 0
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]
    blobs = [p for p in (env.home / "server" / "blobs").rglob("*") if p.is_file()]
    target = next(p for p in blobs if p.read_bytes() == b"precious\n")
    target.chmod(0o644)
    target.write_bytes(b"tampered\n")

    result = env.dstack("cp", name, "out", str(tmp_path / "copy"))

    assert result.code == 1
    assert target.name[-12:] in result.err or "does not match" in result.err
    assert "Traceback" not in result.err


def test_many_small_files(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    env.workflows(
        """
        workflows:
          - name: many
            provider: bash
            commands:
              - mkdir -p shards
              - for i in $(seq 1 1000); do echo "shard $i" > shards/$i.txt; done
            artifacts: [shards]
        """
    )
    env.commit()
    assert env.dstack("run", "many").code == 0
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]

    listed = env.dstack("ls", name, "-r")
    assert sum(1 for line in listed.out.splitlines() if ".txt" in line) == 1000
    assert env.dstack("cp", name, "shards", str(tmp_path / "s")).code == 0
    assert (tmp_path / "s" / "777.txt").read_text() == "shard 777\n"


def test_one_gib_artifact(process_env: Env, tmp_path: Path) -> None:
    env = process_env
    env.workflows(
        """
        workflows:
          - name: big
            provider: bash
            commands:
              - mkdir -p big
              - head -c 1073741824 /dev/urandom > big/blob.bin
              - sha256sum big/blob.bin | cut -d' ' -f1
            artifacts: [big]
        """
    )
    env.commit()
    result = env.dstack("run", "big", timeout=300)
    assert result.code == 0, result
    digest = result.out.split()[-1]
    name = json.loads(env.dstack("ps", "--json").out)[0]["name"]

    copied = env.dstack("cp", name, "big/blob.bin", str(tmp_path / "blob.bin"), timeout=300)

    assert copied.code == 0, copied
    assert (tmp_path / "blob.bin").stat().st_size == 1 << 30
    import hashlib

    h = hashlib.sha256()
    with (tmp_path / "blob.bin").open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest


def test_workflow_cache_is_restored_and_pruned(process_env: Env) -> None:
    env = process_env
    env.workflows(
        """
        workflows:
          - name: deps
            provider: bash
            commands:
              - mkdir -p ~/.cache/pkgs
              - test -f ~/.cache/pkgs/pkg.whl && echo "cache hit" || echo "downloaded"
              - echo wheel > ~/.cache/pkgs/pkg.whl
            cache: [~/.cache/pkgs]
        """
    )
    env.commit()
    assert "downloaded" in env.dstack("run", "deps").out
    assert "cache hit" in env.dstack("run", "deps").out

    pruned = env.dstack("prune", "cache", "deps")

    assert pruned.code == 0, pruned
    assert "downloaded" in env.dstack("run", "deps").out
