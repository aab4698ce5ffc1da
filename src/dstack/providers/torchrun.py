"""`provider: torchrun` — a PyTorch script on every node of the run, through `torchrun`."""

from __future__ import annotations

from dstack.models.job import JobSpec
from dstack.models.workflow import WorkflowSpec
from dstack.providers.base import (
    Provider,
    SubmissionContext,
    base_job_spec,
    pip_install_requirements,
    quote_all,
    require,
)

# What the runner sets on each node of a multi-node run (never baked into the command: every
# node runs the same command, the values differ per node and are only known once placed).
NODE_VARIABLES = ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_command(nodes: int, gpus: int, script_and_args: list[str]) -> str:
    """`torchrun ... SCRIPT ARGS`: `--standalone` on one node; else the rank and master
    address come from the node's environment (`$NODE_RANK`, `$MASTER_ADDR`, `$MASTER_PORT`)."""
    if nodes <= 1:
        placement = "--standalone --nnodes 1"
    else:
        placement = (
            f'--nnodes {nodes} --node_rank "$NODE_RANK" '
            '--master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT"'
        )
    return f"torchrun {placement} --nproc_per_node {gpus} {quote_all(script_and_args)}"


class TorchrunProvider(Provider):
    """`torchrun` with one process per GPU (at least one) on each of `nodes` machines."""

    name = "torchrun"
    reads = frozenset({"file", "args"})
    usage = "SCRIPT [ARGS]..."
    positional = "file"
    summary = "Run a PyTorch script with torchrun, on one or more nodes (--nodes)."

    def job_spec(self, workflow: WorkflowSpec, ctx: SubmissionContext) -> JobSpec:
        script = require(workflow, workflow.file, "script", "train.py")
        gpus = max(1, workflow.resources.gpu_count)
        command = torchrun_command(
            workflow.resources.nodes, gpus, [script, *workflow.args, *ctx.run_args]
        )
        commands = [*pip_install_requirements(workflow), *workflow.setup, command]
        return base_job_spec(workflow, ctx, commands=commands)
