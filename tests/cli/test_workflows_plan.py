"""`dstack workflows` and `dstack plan`, through the real CLI group in a temp git repository."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dstack.cli.main import cli, main
from dstack.errors import ConfigError, NotFoundError

WORKFLOWS = """\
workflows:
  - name: prepare
    help: Download the data
    provider: bash
    commands:
      - mkdir -p data
    artifacts:
      - data
  - name: train
    help: Train the model
    provider: python
    file: train.py
    requirements: requirements.txt
    deps:
      - workflow: prepare
      - tag: v1
    resources:
      gpu: 1
      memory: 16GB
  - name: app
    provider: docker
    image: ubuntu
    entrypoint: /bin/sh -c
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One DSTACK_HOME (and so one local server, which `plan` asks about caching) per module."""
    from dstack.server.local import stop_local_server

    path = tmp_path_factory.mktemp("home")
    yield path
    stop_local_server(path)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """A git repository with its `.dstack/` in `ml/`; the current folder is `ml/`."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ml = tmp_path / "ml"
    (ml / ".dstack").mkdir(parents=True)
    (ml / ".dstack" / "workflows.yaml").write_text(WORKFLOWS)
    monkeypatch.chdir(ml)
    monkeypatch.setenv("DSTACK_HOME", str(home))
    monkeypatch.setenv("DSTACK_EXECUTOR", "process")
    monkeypatch.delenv("DSTACK_DEFAULT_IMAGE", raising=False)
    monkeypatch.delenv("DSTACK_DEFAULT_GPU_IMAGE", raising=False)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_workflows_lists_name_provider_help(repo: Path) -> None:
    result = invoke("workflows")
    assert result.exit_code == 0
    lines = [line.rstrip().split(None, 3) for line in result.output.splitlines()]
    assert lines == [
        ["NAME", "PROVIDER", "FROM", "HELP"],
        ["prepare", "bash", "built-in", "Download the data"],
        ["train", "python", "built-in", "Train the model"],
        ["app", "docker", "built-in"],
    ]


def test_workflows_says_where_each_provider_comes_from(repo: Path) -> None:
    dstack = repo / "ml" / ".dstack"
    (dstack / "providers.yaml").write_text(
        "providers:\n  - {name: fetch, image: alpine}\n  - {name: bash, image: alpine}\n"
    )
    (dstack / "workflows.yaml").write_text(
        "workflows:\n"
        "  - {name: a, provider: fetch}\n"
        "  - {name: b, provider: bash, commands: [x]}\n"
        "  - {name: c, provider: torchrun, script: t.py}\n"
        "  - {name: d, provider: nowhere-to-be-found}\n"
    )
    result = invoke("workflows")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()[1:]]
    assert lines == [
        ["a", "fetch", "providers.yaml"],
        ["b", "bash", "built-in"],
        ["c", "torchrun", "built-in"],
        ["d", "nowhere-to-be-found", "unknown"],
    ]


def test_workflows_outside_a_repository_with_dstack_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    result = invoke("workflows")
    assert isinstance(result.exception, ConfigError)
    assert "no .dstack/ folder" in result.exception.message


def test_plan_of_a_workflow_shows_its_dependencies_first(repo: Path) -> None:
    result = invoke("plan", "train", "--epochs", "3")
    # The plan is shown, and the tag it needs, which does not exist yet, is the error.
    assert isinstance(result.exception, NotFoundError)
    assert result.exception.message == "tag 'v1' does not exist"
    out = result.output
    assert out.startswith("Plan for workflow 'train': 2 jobs\nArguments: --epochs 3\n")
    assert out.index("Job 0: prepare") < out.index("Job 1: train")
    # the process executor (this fixture's) runs jobs on the host: no image to show
    assert "  image:       - (the process executor runs jobs on the host)\n" in out
    assert "  working dir: ml\n" in out
    assert "  commands:    pip install -r requirements.txt\n" in out
    assert "               python train.py --epochs 3\n" in out
    assert "  resources:   16 GiB, 1xGPU\n" in out
    assert "  depends on:  job 0 (prepare), :v1\n" in out


def test_plan_shows_the_workflows_own_image_and_entrypoint(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("plan", "app")
    assert "  image:       ubuntu (not used: the process executor runs jobs on the host)\n" in (
        result.output
    )
    monkeypatch.setenv("DSTACK_EXECUTOR", "docker")
    result = invoke("plan", "app")
    assert "  image:       ubuntu\n" in result.output
    assert "  commands:    entrypoint: /bin/sh -c\n" in result.output
    assert "(the image's default command)" in result.output


def test_plan_default_image_comes_from_the_environment(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSTACK_DEFAULT_GPU_IMAGE", "local/gpu:{python}")
    monkeypatch.setenv("DSTACK_EXECUTOR", "docker")
    result = invoke("plan", "train")
    assert "  image:       local/gpu:3.11 (default)\n" in result.output
    assert "  image:       python:3.11-slim (default)\n" in result.output


def test_plan_of_a_provider_passes_script_options_through(repo: Path) -> None:
    result = invoke("plan", "python", "--gpu", "1", "train.py", "--epochs", "3", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["workflow_name"] is None
    assert plan["provider"] == "python"
    [job] = plan["jobs"]
    assert job["spec"]["commands"] == ["python train.py --epochs 3"]
    assert job["spec"]["resources"]["gpu"]["count"] == 1
    assert job["spec"]["working_dir"] == "ml"


def test_plan_json_of_a_workflow(repo: Path) -> None:
    result = invoke("plan", "--json", "train")
    plan = json.loads(result.output)
    assert [j["workflow_name"] for j in plan["jobs"]] == ["prepare", "train"]
    assert plan["jobs"][1]["deps"] == [0]
    assert plan["jobs"][1]["external_deps"] == [
        {"kind": "tag", "workflow": None, "tag": "v1", "repo": None}
    ]


def test_plan_of_an_app_provider_shows_its_port(repo: Path) -> None:
    result = invoke("plan", "lab")
    assert result.exit_code == 0, result.output
    assert "Plan for dstack run lab: 1 job" in result.output
    assert "  ports:       $PORT_0 (lab)\n" in result.output


def test_plan_of_a_typo_names_the_closest_workflow(repo: Path) -> None:
    result = invoke("plan", "trian")
    assert isinstance(result.exception, ConfigError)
    assert result.exception.message == "no workflow 'trian'; did you mean 'train'?"


def test_plan_of_an_unknown_name_lists_workflows_and_providers(repo: Path) -> None:
    result = invoke("plan", "zzz")
    assert isinstance(result.exception, ConfigError)
    assert result.exception.message == (
        "no workflow 'zzz': it is neither a workflow of this repository nor a provider"
    )
    assert result.exception.hint is not None
    assert "workflows: prepare, train, app" in result.exception.hint
    assert "providers: bash, python" in result.exception.hint


def test_plan_errors_are_printed_as_one_line_with_exit_code_1(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "python", "--gpu", "1"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "Error: dstack run python: missing FILE",
        "Hint: dstack run python [OPTIONS] FILE [ARGS]...",
    ]


def test_plan_of_a_bad_workflow_names_it(repo: Path) -> None:
    (repo / "ml" / ".dstack" / "workflows.yaml").write_text(
        WORKFLOWS + "  - name: broken\n    provider: python\n"
    )
    result = invoke("plan", "broken")
    assert isinstance(result.exception, ConfigError)
    assert result.exception.message.startswith("workflow 'broken' (.dstack/workflows.yaml:")
    assert result.exception.message.endswith("has no 'file'")


def test_plan_works_without_a_dstack_folder_for_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")
    result = invoke("plan", "bash", "-c", "echo hi", "--", "a b")
    assert result.exit_code == 0, result.output
    assert "  commands:    echo hi 'a b'\n" in result.output
    assert "  working dir: src\n" in result.output


def _torchrun_plan(*args: str) -> dict[str, Any]:
    result = invoke("plan", "--json", "torchrun", *args)
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads(result.output)
    return plan


def test_plan_of_torchrun_on_one_node_is_standalone(repo: Path) -> None:
    plan = _torchrun_plan("--gpu", "2", "train.py", "--lr", "0.1")
    [job] = plan["jobs"]
    assert job["spec"]["provider"] == "torchrun"
    assert job["spec"]["commands"] == [
        "torchrun --standalone --nnodes 1 --nproc_per_node 2 train.py --lr 0.1"
    ]
    assert job["spec"]["resources"]["nodes"] == 1


def test_plan_of_torchrun_on_two_nodes_reads_rank_and_master_from_the_node(repo: Path) -> None:
    plan = _torchrun_plan("--nodes", "2", "-r", "req.txt", "train.py")
    spec = plan["jobs"][0]["spec"]
    assert spec["commands"] == [
        "pip install -r req.txt",
        'torchrun --nnodes 2 --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"'
        ' --master_port "$MASTER_PORT" --nproc_per_node 1 train.py',
    ]
    assert spec["resources"]["nodes"] == 2


def test_plan_of_a_torchrun_workflow_with_nodes_at_workflow_level(repo: Path) -> None:
    (repo / "ml" / ".dstack" / "workflows.yaml").write_text(
        "workflows:\n  - name: ddp\n    provider: torchrun\n    script: example.py\n"
        "    nodes: 2\n    resources:\n      gpu: 4\n"
    )
    result = invoke("plan", "--json", "ddp", "--epochs", "1")
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)["jobs"][0]["spec"]
    assert spec["commands"] == [
        'torchrun --nnodes 2 --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"'
        ' --master_port "$MASTER_PORT" --nproc_per_node 4 example.py --epochs 1'
    ]
    assert spec["resources"]["nodes"] == 2


def test_dstack_run_torchrun_help_shows_nodes(repo: Path) -> None:
    result = invoke("run", "torchrun", "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: dstack run torchrun [OPTIONS] SCRIPT [ARGS]..." in result.output
    assert "--nodes" in result.output


def test_a_bad_providers_yaml_is_one_line_naming_file_and_key(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "ml" / ".dstack" / "providers.yaml").write_text(
        "providers:\n  - name: fetch\n    image: alpine\n    command: [x]\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "train"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Error: .dstack/providers.yaml:4: unknown key 'command' in a provider"
    assert err[1:] == ["Hint: did you mean 'commands'?"]


def test_plan_of_two_nodes_shows_each_node_and_the_runners_that_fit(repo: Path) -> None:
    result = invoke("plan", "python", "--nodes", "2", "train.py")
    assert result.exit_code == 0, result.output
    assert "Plan for dstack run python: 2 jobs" in result.output
    assert "node:        0 of 2 (primary: MASTER_ADDR)" in result.output
    assert "node:        1 of 2\n" in result.output
    assert "Runners that fit:" in result.output
    assert "  job 1  " in result.output.split("Runners that fit:")[1]
