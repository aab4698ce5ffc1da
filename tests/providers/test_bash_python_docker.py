from __future__ import annotations

from pathlib import Path

import pytest

from dstack.errors import ConfigError
from dstack.models.job import PortSpec
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.models.workflow import ArtifactSpec, RegistryAuth
from dstack.providers import SubmissionContext, job_specs

from .builders import run_commands, workflow


def test_bash_runs_requirements_then_setup_then_commands() -> None:
    wf = workflow("bash", commands=["python train.py"], setup=["echo s"], requirements="req.txt")
    [job] = job_specs(wf, SubmissionContext())
    assert job.commands == ["pip install -r req.txt", "echo s", "python train.py"]
    assert job.provider == "bash"
    assert job.workflow_name == "train"
    assert job.image is None


def test_bash_without_commands_names_the_workflow() -> None:
    with pytest.raises(ConfigError) as err:
        job_specs(workflow("bash"), SubmissionContext())
    assert err.value.message == "workflow 'train' (.dstack/workflows.yaml:3) has no commands"


def test_bash_args_are_appended_quoted_to_the_last_command(tmp_path: Path) -> None:
    wf = workflow("bash", commands=["echo first", "printf '%s|' "], args=["a b", "$HOME"])
    [job] = job_specs(wf, SubmissionContext())
    assert run_commands(job, tmp_path) == "first\na b|$HOME|"


def test_common_fields_are_carried_over() -> None:
    resources = ResourcesSpec(cpu=2, gpu=GpuRequest(count=1, name="A100"), interruptible=True)
    wf = workflow(
        "bash",
        commands=["true"],
        python="3.10",
        artifacts=[ArtifactSpec(path="out", mount=True)],
        cache=["~/.cache/pip"],
        resources=resources,
        registry_auth=RegistryAuth(username="u", password="${{ secrets.P }}"),
        triggers=["src/**"],
        port_count=2,
        ports=[8000],
        image="ubuntu",
    )
    [job] = job_specs(wf, SubmissionContext())
    assert job.python == "3.10"
    assert job.artifacts == [ArtifactSpec(path="out", mount=True)]
    assert job.cache == ["~/.cache/pip"]
    assert job.resources == resources
    assert job.registry_auth == RegistryAuth(username="u", password="${{ secrets.P }}")
    assert job.triggers == ["src/**"]
    assert job.ports == [PortSpec(port=8000), PortSpec(), PortSpec()]
    assert job.image == "ubuntu"


def test_env_values_missing_from_the_file_come_from_the_user_or_are_dropped() -> None:
    wf = workflow("bash", commands=["true"], env={"A": "1", "TOKEN": None, "ABSENT": None})
    [job] = job_specs(wf, SubmissionContext(environ={"TOKEN": "t0k", "OTHER": "x"}))
    assert job.env == {"A": "1", "TOKEN": "t0k", "DSTACK_WORKFLOW": "train"}


@pytest.mark.parametrize(
    ("subdir", "working_dir", "expected"),
    [
        ("", None, "."),
        ("", "src", "src"),
        ("ml", None, "ml"),
        ("ml", "./train/", "ml/train"),
        ("ml", "..", "."),
    ],
)
def test_working_dir_is_relative_to_the_repository_root(
    subdir: str, working_dir: str | None, expected: str
) -> None:
    wf = workflow("bash", commands=["true"], working_dir=working_dir)
    [job] = job_specs(wf, SubmissionContext(subdir=subdir))
    assert job.working_dir == expected


def test_working_dir_outside_the_repository_is_refused() -> None:
    wf = workflow("bash", commands=["true"], working_dir="../..")
    with pytest.raises(ConfigError, match=r"working_dir '\.\./\.\.' of workflow 'train'.*outside"):
        job_specs(wf, SubmissionContext(subdir="ml"))


def test_python_runs_the_file_with_its_args_then_the_run_args(tmp_path: Path) -> None:
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "train.py").write_text("import sys; print(sys.argv[1:])\n")
    wf = workflow("python", file="train.py", args=["--model", "117M"])
    [job] = job_specs(wf, SubmissionContext(subdir="ml", run_args=["--lr", "0.1 0.2"]))
    assert job.commands == ["python train.py --model 117M --lr '0.1 0.2'"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(Path(__import__("sys").executable))
    out = run_commands(job, tmp_path, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out == "['--model', '117M', '--lr', '0.1 0.2']\n"


def test_python_installs_requirements_first() -> None:
    wf = workflow("python", file="t.py", requirements="my reqs.txt")
    [job] = job_specs(wf, SubmissionContext())
    assert job.commands == ["pip install -r 'my reqs.txt'", "python t.py"]


def test_python_without_file_names_the_workflow() -> None:
    with pytest.raises(ConfigError) as err:
        job_specs(workflow("python"), SubmissionContext())
    assert err.value.message == "workflow 'train' (.dstack/workflows.yaml:3) has no 'file'"
    assert err.value.hint is not None
    assert "file: train.py" in err.value.hint


def test_docker_needs_an_image() -> None:
    with pytest.raises(ConfigError, match=r"workflow 'train' .* has no 'image'"):
        job_specs(workflow("docker", commands=["ls"]), SubmissionContext())


def test_docker_without_commands_keeps_the_images_default_command() -> None:
    [job] = job_specs(workflow("docker", image="ubuntu"), SubmissionContext())
    assert job.image == "ubuntu"
    assert job.commands == []
    assert job.entrypoint is None


def test_docker_entrypoint_is_split_like_a_shell() -> None:
    wf = workflow("docker", image="ubuntu", entrypoint="/bin/bash -i -c", commands=["ls"])
    [job] = job_specs(wf, SubmissionContext())
    assert job.entrypoint == ["/bin/bash", "-i", "-c"]
    assert job.commands == ["ls"]


def test_docker_entrypoint_with_unbalanced_quotes_is_a_config_error() -> None:
    wf = workflow("docker", image="ubuntu", entrypoint="sh -c 'oops")
    with pytest.raises(ConfigError, match="entrypoint of workflow 'train'"):
        job_specs(wf, SubmissionContext())


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        job_specs(workflow("nope", commands=["x"]), SubmissionContext())
    assert err.value.message == (
        "unknown provider 'nope' in workflow 'train' (.dstack/workflows.yaml:3)"
    )
    assert err.value.hint is not None
    assert "bash, python, docker" in err.value.hint


def test_early_provider_names_map_onto_todays() -> None:
    [job] = job_specs(workflow("jupyterlab@experimental"), SubmissionContext())
    assert job.provider == "lab"
