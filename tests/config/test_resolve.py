"""Variables, CLI overrides, interpolation and normalization of each syntax variant."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.config.helpers import resolve

from dstack.errors import ConfigError
from dstack.models.workflow import DepKind

VARS = "variables:\n  w:\n    epochs: 10\n    batch-size: 32\n    gpu: 1\n"


def wf(body: str) -> str:
    """A one-workflow file named `w`; ``body`` lines are indented under the item."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return f"workflows:\n  - name: w\n{lines}"


def test_overrides_and_run_args(tmp_path: Path) -> None:
    text = wf("provider: bash\ncommands:\n  - python t.py --epochs $epochs ${{ run.args }}")
    argv = ["--epochs", "100", "--batch-size=64", "--lr", "0.1", "x y"]
    resolved = resolve(tmp_path, text, argv=argv, variables=VARS)
    assert resolved.run_args == ["--lr", "0.1", "x y"]
    assert resolved.spec.commands == ["python t.py --epochs 100 --lr 0.1 'x y'"]
    assert resolved.spec.variables == {"epochs": "100", "batch-size": "64", "gpu": "1"}
    assert resolved.spec.env["BATCH_SIZE"] == "64"


def test_override_needs_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--epochs needs a value"):
        resolve(tmp_path, wf("provider: bash"), argv=["--epochs"], variables=VARS)


def test_shell_variables_are_left_alone(tmp_path: Path) -> None:
    text = wf(
        "provider: bash\nenv: ['PATH=/opt/bin:$PATH', FOO]\ncommands:\n"
        "  - serve --port $PORT_0 --e ${epochs} $variables_as_args\n"
        "  - echo $run_name $job_id ${{ run.name }} ${{ secrets.TOKEN }}"
    )
    spec = resolve(tmp_path, text, variables=VARS).spec
    assert spec.commands == [
        "serve --port $PORT_0 --e 10 --epochs 10 --batch-size 32 --gpu 1",
        "echo ${DSTACK_RUN_NAME} ${DSTACK_JOB_ID} ${DSTACK_RUN_NAME} ${{ secrets.TOKEN }}",
    ]
    assert spec.env["PATH"] == "/opt/bin:$PATH"
    assert spec.env["FOO"] is None


def test_explicit_env_wins_over_variables(tmp_path: Path) -> None:
    spec = resolve(tmp_path, wf("provider: bash\nenv: [EPOCHS=3]"), variables=VARS).spec
    assert spec.env["EPOCHS"] == "3"


def test_typed_variable_and_global_section(tmp_path: Path) -> None:
    variables = "variables:\n  global:\n    gpu: 2\n    m: x\n  w:\n    gpu: 1\n"
    text = wf("provider: bash\nresources:\n  gpu: ${{ gpu }}\n  cpu: ${{ variables.gpu }}")
    spec = resolve(tmp_path, text, variables=variables).spec
    assert spec.resources.gpu_count == 1
    assert spec.resources.cpu == 1
    assert spec.variables["m"] == "x"
    spec = resolve(tmp_path, text, argv=["--gpu", "4"], variables=variables).spec
    assert spec.resources.gpu_count == 4


def test_unknown_reference_says_where_and_known_names(tmp_path: Path) -> None:
    text = wf("provider: bash\ncommands:\n  - echo ${{ epoch }}")
    with pytest.raises(ConfigError) as info:
        resolve(tmp_path, text, variables=VARS)
    assert info.value.message.startswith(".dstack/workflows.yaml:4: workflow 'w': unknown ref")
    assert "epochs" in (info.value.hint or "")


def test_unknown_key_has_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(tmp_path, wf("provider: bash\nartifiacts: [x]"))
    assert info.value.message == ".dstack/workflows.yaml:4: workflow 'w': unknown key 'artifiacts'"
    assert info.value.hint == "did you mean 'artifacts'?"


def test_unknown_workflow_lists_close_matches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown workflow 'ww'") as info:
        resolve(tmp_path, wf("provider: bash"), name="ww")
    assert info.value.hint == "did you mean 'w'?"


@pytest.mark.parametrize(
    ("body", "provider", "python", "args"),
    [
        ("image: ubuntu", "docker", None, []),
        ("provider: python3.9", "python", "3.9", []),
        ("provider: python==3.8", "python", "3.8", []),
        ("provider: python/3.9", "python", "3.9", []),
        ("provider: 'python:3.11'", "python", "3.11", []),
        ("provider: python\npython: 3.10", "python", "3.10", []),
        ("provider: python\nversion: '3.9'", "python", "3.9", []),
        ("provider: python\npython: [3.9]", "python", "3.9", []),
        ("provider: torchrun@experimental", "torchrun", None, []),
        ("provider: [jupyter]", "notebook", None, []),
        ("provider: jupyterlab", "lab", None, []),
        ("provider: vscode@experimental", "code", None, []),
        ("provider: python a b\nargs: [--x, 1]", "python", None, ["--x", "1", "a", "b"]),
    ],
)
def test_provider_variants(
    tmp_path: Path, body: str, provider: str, python: str | None, args: list[str]
) -> None:
    spec = resolve(tmp_path, wf(body)).spec
    assert (spec.provider, spec.python, spec.args) == (provider, python, args)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("commands: [x]", ":2: workflow 'w': no 'provider' and no 'image'"),
        ("provider: {repo: https://x/y, name: p}", ":3: workflow 'w': custom providers"),
        ("provider: python\npython: 'three'", ":4: workflow 'w': invalid Python version"),
        ("provider: bash\nartifacts:\n  -", ":4: workflow 'w': invalid 'artifacts[0]'"),
        ("provider: bash\nresources:\n  gpu: many", ":5: workflow 'w': invalid 'resources.gpu'"),
        ("provider: bash\nresources:\n  memory: lots", ":5: workflow 'w': invalid 'resources.me"),
        ("provider: bash\nresources:\n  GPU: 1", ":5: workflow 'w': unknown key 'resources.GPU'"),
        ("provider: bash\nports: ['port 6006']", ":4: workflow 'w': invalid port"),
        ("provider: bash\ndepends-on:\n  - a: t", ":4: workflow 'w': 'depends-on' item is a map"),
        ("provider: bash\ndepends-on: {workflows: [a]}", ":4: workflow 'w': unsupported legacy"),
        ("provider: bash\ncommands: echo", ":4: workflow 'w': invalid 'commands'"),
    ],
)
def test_value_errors_are_located(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"^\.dstack/workflows\.yaml" + re.escape(fragment)):
        resolve(tmp_path, wf(body))


def test_python_provider_fields(tmp_path: Path) -> None:
    body = (
        "provider: python\npython_script: train.py\nrequirements: requirements.txt\n"
        "environment: {FLAG: true, N: 3}\nworking_dir: src\nbefore_run: [pip install x]"
    )
    spec = resolve(tmp_path, wf(body)).spec
    assert (spec.file, spec.requirements, spec.working_dir) == (
        "train.py",
        "requirements.txt",
        "src",
    )
    assert spec.env == {"FLAG": "true", "N": "3"}
    assert spec.setup == ["pip install x"]


def test_script_spellings(tmp_path: Path) -> None:
    assert resolve(tmp_path, wf("provider: python\nscript: a.py")).spec.file == "a.py"
    assert resolve(tmp_path, wf("provider: streamlit\ntarget: app.py")).spec.file == "app.py"
    assert resolve(tmp_path, wf("provider: fastapi\napp: main:app")).spec.app == "main:app"


def test_artifacts_cache_deps_triggers(tmp_path: Path) -> None:
    body = (
        "provider: bash\nartifacts: [a, {path: b, mount: true}]\n"
        "cache: [~/.cache/pip, {path: /root/.cache}]\n"
        "deps: [{workflow: prep}, {tag: t1}, {workflow: o/r/x}, ':t2', 'y:latest', 'z:t3']\n"
        "depends-on: [d]\ntriggers: [a.py, {repo: {include: [b.py]}}]"
    )
    spec = resolve(tmp_path, wf(body)).spec
    assert [(a.path, a.mount) for a in spec.artifacts] == [("a", False), ("b", True)]
    assert spec.cache == ["~/.cache/pip", "/root/.cache"]
    assert [str(d) for d in spec.deps] == ["prep", ":t1", "o/r/x", ":t2", "y:latest", "z:t3", "d"]
    assert [d.kind for d in spec.deps][:2] == [DepKind.WORKFLOW, DepKind.TAG]
    assert spec.deps[2].repo == "o/r"
    assert spec.triggers == ["a.py", "b.py"]


def test_deps_single_mapping(tmp_path: Path) -> None:
    spec = resolve(tmp_path, wf("provider: bash\ndeps: {workflow: data}")).spec
    assert [str(d) for d in spec.deps] == ["data"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("resources:\n  gpu: 0", "-"),
        ("resources:\n  gpu: {name: A100}", "1xA100"),
        ("resources:\n  gpu: {name: V100, count: 2, memory: 16GB}", "2xV100 (16 GiB)"),
        ("resources:\n  v100/gpu: 2", "2xV100"),
        ("gpu: 1", "1xGPU"),
        (
            "resources:\n  cpu: 2\n  memory: 8GB\n  shm_size: 512MiB\n  interruptible: true",
            "2 CPU, 8 GiB, shm 512 MiB, interruptible",
        ),
    ],
)
def test_resources(tmp_path: Path, body: str, expected: str) -> None:
    spec = resolve(tmp_path, wf("provider: bash\n" + body)).spec
    assert spec.resources.describe() == expected


def test_nodes_local_ports_ssh_registry(tmp_path: Path) -> None:
    body = (
        "provider: docker\nimage: x\nnodes: 2\nresources: {local: true}\nports: 2\nssh: true\n"
        "registry_auth:\n  username: u\n  password: ${{ secrets.P }}"
    )
    spec = resolve(tmp_path, wf(body)).spec
    assert (spec.resources.nodes, spec.resources.local, spec.port_count, spec.ssh) == (
        2,
        True,
        2,
        True,
    )
    assert spec.registry_auth is not None
    assert spec.registry_auth.password == "${{ secrets.P }}"
    assert resolve(tmp_path, wf("provider: bash\nports: [8000, '8001']")).spec.ports == [8000, 8001]
    assert resolve(tmp_path, wf("provider: bash\nports:")).spec.port_count == 0


def test_template_wrapper(tmp_path: Path) -> None:
    body = "template:\n  image: ubuntu\n  commands: [echo]\n  resources: {memory: 1GB}"
    spec = resolve(tmp_path, wf(body)).spec
    assert (spec.provider, spec.image, spec.commands) == ("docker", "ubuntu", ["echo"])
    assert spec.resources.memory_mib == 1024
