from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dstack.config import RepoConfig, load_config
from dstack.errors import ConfigError
from dstack.models.workflow import DepKind, DepRef
from dstack.providers.plan import plan_provider, plan_workflow


def config(tmp_path: Path, yaml: str) -> RepoConfig:
    (tmp_path / ".dstack").mkdir()
    (tmp_path / ".dstack" / "workflows.yaml").write_text(textwrap.dedent(yaml))
    return load_config(tmp_path)


PIPELINE = """\
workflows:
  - name: download
    provider: bash
    commands: [echo download]
  - name: prepare
    provider: bash
    commands: [echo prepare]
    deps:
      - workflow: download
  - name: train
    provider: python
    file: train.py
    deps:
      - workflow: prepare
      - workflow: download
      - tag: v1
      - download:latest
"""


def test_dependencies_come_first_each_once(tmp_path: Path) -> None:
    plan = plan_workflow(
        config(tmp_path, PIPELINE), "train", ["--lr", "0.1"], subdir="", environ={}
    )
    assert [j.workflow_name for j in plan.jobs] == ["download", "prepare", "train"]
    assert [j.deps for j in plan.jobs] == [[], [0], [1, 0]]
    assert plan.jobs[2].external_deps == [
        DepRef(kind=DepKind.TAG, tag="v1"),
        DepRef(kind=DepKind.LATEST, workflow="download"),
    ]
    assert plan.workflow_name == "train"
    assert plan.provider == "python"
    assert plan.run_args == ["--lr", "0.1"]


def test_run_args_reach_only_the_target(tmp_path: Path) -> None:
    plan = plan_workflow(
        config(tmp_path, PIPELINE), "train", ["--lr", "0.1"], subdir="", environ={}
    )
    assert plan.jobs[2].spec.commands == ["python train.py --lr 0.1"]
    assert plan.jobs[0].spec.commands == ["echo download"]


def test_jobs_carry_the_workflow_name_and_subdir(tmp_path: Path) -> None:
    plan = plan_workflow(config(tmp_path, PIPELINE), "prepare", [], subdir="ml", environ={})
    assert [j.spec.working_dir for j in plan.jobs] == ["ml", "ml"]
    assert plan.jobs[1].spec.env["DSTACK_WORKFLOW"] == "prepare"


def test_a_cycle_is_named(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """\
        workflows:
          - name: a
            provider: bash
            commands: [x]
            deps: [{workflow: b}]
          - name: b
            provider: bash
            commands: [x]
            deps: [{workflow: a}]
        """,
    )
    with pytest.raises(ConfigError, match="cycle: a → b → a"):
        plan_workflow(cfg, "a", [], subdir="", environ={})


def test_an_unknown_dependency_names_the_workflow_and_where(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """\
        workflows:
          - name: a
            provider: bash
            commands: [x]
          - name: b
            provider: bash
            commands: [x]
            deps: [{workflow: prepar}]
        """,
    )
    with pytest.raises(ConfigError) as err:
        plan_workflow(cfg, "b", [], subdir="", environ={})
    assert err.value.message.startswith(
        "workflow 'b' (.dstack/workflows.yaml:5) depends on unknown workflow 'prepar'"
    )
    assert err.value.hint == "workflows of this repository: a, b"


def test_provider_plan_has_one_job_and_external_deps() -> None:
    plan = plan_provider("bash", ["--dep", "prep", "-c", "echo hi"], subdir="src", environ={})
    [job] = plan.jobs
    assert job.workflow_name is None
    assert job.spec.commands == ["echo hi"]
    assert job.spec.working_dir == "src"
    assert "DSTACK_WORKFLOW" not in job.spec.env
    assert job.external_deps == [DepRef(kind=DepKind.LATEST, workflow="prep")]
    assert plan.workflow_name is None
    assert plan.provider == "bash"
    assert plan.run_args == ["--dep", "prep", "-c", "echo hi"]


def test_provider_plan_tokens_can_be_injected() -> None:
    plan = plan_provider("notebook", [], subdir="", environ={}, token_factory=lambda: "tok")
    assert plan.jobs[0].spec.apps[0].url_query == {"token": "tok"}


NODES = """\
workflows:
  - name: prepare
    provider: bash
    commands: [echo prepare]
  - name: train
    provider: bash
    commands: [python train.py]
    nodes: 3
    deps:
      - workflow: prepare
  - name: evaluate
    provider: bash
    commands: [echo evaluate]
    resources:
      nodes: 2
    deps:
      - workflow: train
"""


def test_nodes_make_one_job_per_node_next_to_each_other(tmp_path: Path) -> None:
    plan = plan_workflow(config(tmp_path, NODES), "evaluate", [], subdir="", environ={})
    jobs = [(j.workflow_name, j.spec.node_rank, j.spec.resources.nodes) for j in plan.jobs]
    assert jobs == [
        ("prepare", 0, 1),
        ("train", 0, 3),
        ("train", 1, 3),
        ("train", 2, 3),
        ("evaluate", 0, 2),
        ("evaluate", 1, 2),
    ]
    # Every node waits for every node of the workflows it depends on.
    assert [j.deps for j in plan.jobs] == [[], [0], [0], [0], [1, 2, 3], [1, 2, 3]]


def test_the_corpus_torchrun_workflow_plans_two_nodes(tmp_path: Path) -> None:
    corpus = Path(__file__).resolve().parents[2] / ".." / "shared" / "compat-corpus"
    source = corpus / "ivan-bokov__dstack-test-providers/.dstack/workflows@d909b5e9.yaml"
    plan = plan_workflow(config(tmp_path, source.read_text()), "hello", [], subdir="", environ={})
    assert [j.spec.node_rank for j in plan.jobs] == [0, 1]
    assert all("--nnodes 2" in j.spec.commands[-1] for j in plan.jobs)
