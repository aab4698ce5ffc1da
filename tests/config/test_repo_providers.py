"""`.dstack/providers.yaml`: every form the real repositories wrote, and clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.config.helpers import write_repo

from dstack.config import RepoConfig, load_config, resolve_workflow
from dstack.errors import ConfigError

WORKFLOW = "workflows:\n  - name: w\n    provider: hello\n    url: http://x\n"


def _config(root: Path, providers: str, workflows: str = WORKFLOW) -> RepoConfig:
    write_repo(root, workflows)
    (root / ".dstack" / "providers.yaml").write_text(providers)
    return load_config(root)


@pytest.mark.parametrize(
    "providers",
    [
        "providers:\n  - name: hello\n    image: python:3.9\n    commands: [python3 main.py]\n",
        "providers:\n  name: hello\n  image: python:3.9\n  commands: [python3 main.py]\n",
        "providers:\n  hello:\n    image: python:3.9\n    commands: python3 main.py\n",
        "- name: hello\n  image: python:3.9\n  commands:\n    - python3 main.py\n",
    ],
)
def test_the_forms_of_the_file(tmp_path: Path, providers: str) -> None:
    config = _config(tmp_path, providers)
    spec = resolve_workflow(config, "w", []).spec
    assert spec.provider == "hello"
    assert spec.repo_provider is not None
    assert spec.repo_provider.image == "python:3.9"
    assert spec.repo_provider.commands == ["python3 main.py"]
    assert spec.params == {"url": "http://x"}


@pytest.mark.parametrize("providers", ["", "providers:\n", "providers: []\n"])
def test_an_empty_file_defines_none(tmp_path: Path, providers: str) -> None:
    assert _config(tmp_path, providers, "workflows: []\n").custom_providers == {}


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        (
            "providers:\n  - name: hello\n    image: [x]\n",
            ".dstack/providers.yaml:3: invalid 'image' of provider 'hello'",
        ),
        (
            "providers:\n  - name: hello\n    image: x\n    comands: [a]\n",
            ".dstack/providers.yaml:4: unknown key 'comands' in a provider",
        ),
        ("providers: 3\n", ".dstack/providers.yaml:1: 'providers' must be a list"),
        ("provider: []\n", ".dstack/providers.yaml:1: unknown top-level key 'provider'"),
        (
            "providers:\n  - name: a b\n    image: x\n",
            ".dstack/providers.yaml:2: invalid provider 'name' 'a b'",
        ),
        (
            "providers:\n  - {name: a, image: x}\n  - {name: a, image: y}\n",
            ".dstack/providers.yaml:3: provider 'a' is defined twice",
        ),
        (
            "providers:\n  - name: a\n    image: x\n    artifacts: [../up]\n",
            ".dstack/providers.yaml:4: invalid 'artifacts' item of provider 'a'",
        ),
        ("providers: [[ broken", ".dstack/providers.yaml:2:1: invalid YAML"),
    ],
)
def test_a_bad_file_is_one_line_with_file_line_and_key(
    tmp_path: Path, providers: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, providers)
    assert err.value.message.startswith(message), err.value.message
    assert "\n" not in err.value.message


def test_a_built_in_name_wins_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workflows = "workflows:\n  - name: w\n    provider: torchrun\n    script: t.py\n"
    config = _config(tmp_path, "providers:\n  - name: torchrun\n    image: x\n", workflows)
    with caplog.at_level(logging.WARNING):
        spec = resolve_workflow(config, "w", []).spec
    assert spec.provider == "torchrun"
    assert spec.repo_provider is None
    assert "provider 'torchrun' is the built-in one" in caplog.text
    assert ".dstack/providers.yaml:2" in caplog.text


def test_unknown_keys_are_refused_for_a_built_in_provider(tmp_path: Path) -> None:
    workflows = "workflows:\n  - name: w\n    provider: bash\n    url: x\n"
    config = _config(tmp_path, "providers:\n  - name: hello\n    image: x\n", workflows)
    with pytest.raises(ConfigError, match="unknown key 'url'"):
        resolve_workflow(config, "w", [])
