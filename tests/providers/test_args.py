from __future__ import annotations

import click
import pytest

from dstack.errors import ConfigError
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.models.workflow import ArtifactSpec, DepKind, DepRef
from dstack.providers import parse_dep, parse_provider_args


def test_bash_takes_repeated_commands_and_appends_extra_args() -> None:
    spec = parse_provider_args("bash", ["-c", "echo hi", "-c", "ls", "--", "-la", "x"])
    assert spec.provider == "bash"
    assert spec.commands == ["echo hi", "ls"]
    assert spec.args == ["-la", "x"]
    assert spec.source.file == "command line"


def test_python_short_options_before_the_script_long_ones_anywhere_before_dashes() -> None:
    argv = ["--gpu", "1", "-r", "req.txt", "train.py", "--epochs", "3", "-e", "X", "--gpu", "2"]
    spec = parse_provider_args("python", [*argv, "--", "--gpu", "4"])
    assert spec.file == "train.py"
    assert spec.args == ["--epochs", "3", "-e", "X", "--gpu", "4"]
    assert spec.requirements == "req.txt"
    assert spec.resources.gpu == GpuRequest(count=2)
    assert spec.env == {}


def test_the_early_docs_syntax_gives_dstack_its_options() -> None:
    argv = "train.py --epoch 100 --seed 2 --batch-size 128 --dep prepare:latest"
    argv += " --artifact checkpoint --gpu 1 --interruptible --memory=8GB"
    spec = parse_provider_args("python", argv.split())
    assert spec.args == ["--epoch", "100", "--seed", "2", "--batch-size", "128"]
    assert spec.deps == [DepRef(kind=DepKind.LATEST, workflow="prepare")]
    assert spec.artifacts == [ArtifactSpec(path="checkpoint")]
    assert spec.resources.gpu == GpuRequest(count=1)
    assert spec.resources.interruptible
    assert spec.resources.memory_mib == 8 * 1024


def test_a_script_option_after_the_script_stays_the_scripts_help_included() -> None:
    spec = parse_provider_args("torchrun", ["train.py", "--help", "--nodes-x", "2"])
    assert spec.args == ["--help", "--nodes-x", "2"]


def test_shared_options() -> None:
    argv = [
        "-e", "A=1", "-e", "TOKEN", "-a", "out", "--artifact", "logs",
        "--dep", "prepare", "--dep", "prepare:latest", "--dep", ":data", "--dep", "prep:v1",
        "-w", "ml", "-i", "--cpu", "4", "--memory", "16GB", "--gpu-name", "A100",
        "--gpu-memory", "40GB", "--shm-size", "8GB", "-p", "2", "--python", "3.10",
        "-c", "true",
    ]  # fmt: skip
    spec = parse_provider_args("bash", argv)
    assert spec.env == {"A": "1", "TOKEN": None}
    assert spec.artifacts == [ArtifactSpec(path="out"), ArtifactSpec(path="logs")]
    assert spec.deps == [
        DepRef(kind=DepKind.LATEST, workflow="prepare"),
        DepRef(kind=DepKind.LATEST, workflow="prepare"),
        DepRef(kind=DepKind.TAG, tag="data"),
        DepRef(kind=DepKind.TAG, workflow="prep", tag="v1"),
    ]
    assert spec.working_dir == "ml"
    assert spec.resources == ResourcesSpec(
        cpu=4,
        memory_mib=16 * 1024,
        gpu=GpuRequest(count=1, name="A100", memory_mib=40 * 1024),
        shm_size_mib=8 * 1024,
        interruptible=True,
    )
    assert spec.port_count == 2
    assert spec.python == "3.10"


def test_docker_image_and_commands() -> None:
    spec = parse_provider_args("docker", ["ubuntu:22.04", "-c", "echo hi", "--gpu", "2"])
    assert spec.image == "ubuntu:22.04"
    assert spec.commands == ["echo hi"]
    assert spec.resources.gpu == GpuRequest(count=2)


@pytest.mark.parametrize(
    ("provider", "argv", "field", "value"),
    [
        ("streamlit", ["app.py"], "file", "app.py"),
        ("gradio", ["app.py", "--share"], "file", "app.py"),
        ("fastapi", ["main:app"], "app", "main:app"),
    ],
)
def test_app_providers_take_their_target(
    provider: str, argv: list[str], field: str, value: str
) -> None:
    assert getattr(parse_provider_args(provider, argv), field) == value


@pytest.mark.parametrize(
    ("provider", "argv", "message"),
    [
        ("bash", [], "dstack run bash: missing a command (-c COMMAND)"),
        ("python", ["--gpu", "1"], "dstack run python: missing FILE"),
        ("docker", [], "dstack run docker: missing IMAGE"),
        ("lab", ["notebook.ipynb"], "dstack run lab: unexpected argument 'notebook.ipynb'"),
        ("python", ["--gpus", "1", "t.py"], "dstack run python: No such option '--gpus'"),
        ("python", ["--gpu", "many", "t.py"], "dstack run python: Invalid value for '--gpu'"),
        ("bash", ["--memory", "lots", "-c", "x"], "invalid --memory 'lots'"),
        ("bash", ["-e", "=1", "-c", "x"], "invalid -e '=1'"),
        ("bash", ["--dep", "a:b:c", "-c", "x"], "invalid dependency 'a:b:c'"),
        ("torchrun", [], "dstack run torchrun: missing SCRIPT"),
        ("nope", [], "unknown provider 'nope'"),
    ],
)
def test_bad_arguments_are_one_clear_config_error(
    provider: str, argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_provider_args(provider, argv)
    assert err.value.message.startswith(message)
    assert err.value.hint


def test_usage_is_the_hint() -> None:
    with pytest.raises(ConfigError) as err:
        parse_provider_args("python", [])
    assert err.value.hint == "dstack run python [OPTIONS] FILE [ARGS]..."


def test_help_prints_the_provider_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(click.exceptions.Exit):
        parse_provider_args("python", ["--help"])
    out = capsys.readouterr().out
    assert "--gpu-name" in out
    assert "after -- everything is the script's" in out


@pytest.mark.parametrize(
    ("text", "dep"),
    [
        ("prep", DepRef(kind=DepKind.WORKFLOW, workflow="prep")),
        ("prep:latest", DepRef(kind=DepKind.LATEST, workflow="prep")),
        (":v1", DepRef(kind=DepKind.TAG, tag="v1")),
        ("prep:v1", DepRef(kind=DepKind.TAG, workflow="prep", tag="v1")),
    ],
)
def test_parse_dep(text: str, dep: DepRef) -> None:
    assert parse_dep(text) == dep
