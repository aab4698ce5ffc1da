"""`provider: torchrun`: the command line on each node, and that it runs as a shell runs it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.providers.builders import run_commands, workflow

from dstack.errors import ConfigError
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.providers import SubmissionContext, job_specs

# A stand-in for torchrun (torch is not installed): prints its arguments, runs the script.
FAKE_TORCHRUN = """#!/bin/sh
echo "torchrun args: $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --standalone) shift ;;
    --*) shift 2 ;;
    *) break ;;
  esac
done
exec python3 "$@"
"""


def fake_torchrun(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "torchrun"
    path.write_text(FAKE_TORCHRUN)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def _command(nodes: int = 1, gpus: int | None = None, **fields: Any) -> list[str]:
    gpu = GpuRequest(count=gpus) if gpus else None
    wf = workflow(
        "torchrun", file="train.py", resources=ResourcesSpec(nodes=nodes, gpu=gpu), **fields
    )
    specs = job_specs(wf, SubmissionContext(run_args=["--lr", "0.1"]))
    assert [s.node_rank for s in specs] == list(range(nodes))  # one job per node
    assert len({tuple(s.commands) for s in specs}) == 1  # the same command on each
    spec = specs[0]
    assert spec.provider == "torchrun"
    assert spec.resources.nodes == nodes
    return spec.commands


def test_one_node_is_standalone_with_one_process_per_gpu() -> None:
    assert _command(gpus=4) == [
        "torchrun --standalone --nnodes 1 --nproc_per_node 4 train.py --lr 0.1"
    ]


def test_without_gpus_one_process() -> None:
    assert _command()[-1].startswith("torchrun --standalone --nnodes 1 --nproc_per_node 1 ")


def test_two_nodes_take_rank_and_master_from_the_environment() -> None:
    commands = _command(nodes=2, gpus=8, requirements="req.txt", args=["--epochs", "2 3"])
    assert commands == [
        "pip install -r req.txt",
        'torchrun --nnodes 2 --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"'
        " --master_port \"$MASTER_PORT\" --nproc_per_node 8 train.py --epochs '2 3' --lr 0.1",
    ]


def test_a_script_is_required() -> None:
    with pytest.raises(ConfigError, match="has no 'script'"):
        job_specs(workflow("torchrun"), SubmissionContext())


def test_each_node_runs_the_command_with_its_own_variables(tmp_path: Path) -> None:
    """The same command on two nodes: the shell fills in each node's rank and master."""
    (tmp_path / "train.py").write_text("import sys; print('script args', sys.argv[1:])\n")
    wf = workflow("torchrun", file="train.py", args=["x y"], resources=ResourcesSpec(nodes=2))
    spec, _ = job_specs(wf, SubmissionContext())
    path = f"{fake_torchrun(tmp_path / 'bin')}:{os.environ['PATH']}"
    for rank in ("0", "1"):
        node = {"NODE_RANK": rank, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
        out = run_commands(spec, tmp_path, {"PATH": path, **node})
        assert out.splitlines() == [
            f"torchrun args: --nnodes 2 --node_rank {rank} --master_addr 10.0.0.1"
            " --master_port 29500 --nproc_per_node 1 train.py x y",
            "script args ['x y']",
        ]
