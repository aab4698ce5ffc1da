"""Finding `.dstack/`, loading files, merging workflow files, file-level errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tests.config.helpers import write_repo

from dstack.config import find_dstack_root, load_config
from dstack.errors import ConfigError


def test_find_root_walks_up_to_the_dstack_folder(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".dstack").mkdir()
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    assert find_dstack_root(tmp_path / "src" / "pkg") == tmp_path.resolve()


def test_find_root_stops_at_the_git_root(tmp_path: Path) -> None:
    (tmp_path / ".dstack").mkdir()
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    with pytest.raises(ConfigError, match=r"no \.dstack/ folder") as info:
        find_dstack_root(repo)
    assert ".dstack/workflows.yaml" in (info.value.hint or "")  # what to create, not `init`


def test_find_root_outside_git(tmp_path: Path) -> None:
    (tmp_path / "sub" / ".dstack").mkdir(parents=True)
    assert find_dstack_root(tmp_path / "sub") == (tmp_path / "sub").resolve()


def test_merges_workflow_files_in_order(tmp_path: Path) -> None:
    write_repo(tmp_path, "workflows:\n  - name: a\n    provider: bash\n")
    folder = tmp_path / ".dstack" / "workflows"
    folder.mkdir()
    (folder / "z.yml").write_text("workflows:\n- name: z\n  provider: bash\n  help: Zed")
    (folder / "b.yaml").write_text("workflows:\n        - name: b\n          image: ubuntu")
    config = load_config(tmp_path)
    assert config.workflow_names() == ["a", "b", "z"]
    assert config.help("z") == "Zed"
    assert config.provider("b") == "docker"


def test_duplicate_name_names_both_places(tmp_path: Path) -> None:
    write_repo(tmp_path, "workflows:\n  - name: a\n    provider: bash\n")
    (tmp_path / ".dstack" / "workflows").mkdir()
    (tmp_path / ".dstack" / "workflows" / "x.yaml").write_text(
        "workflows:\n  - name: b\n    provider: bash\n  - name: a\n    provider: bash\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.message.startswith(".dstack/workflows/x.yaml:4: workflow 'a'")
    assert "first at .dstack/workflows.yaml:2" in info.value.message


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    write_repo(
        tmp_path, "workflows:\n  - name: a\n    resources:\n      memory: 1GB\n      gpu:0\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.message.startswith(".dstack/workflows.yaml:6:1: invalid YAML")
    assert "indentation" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("steps:\n  - id: x\n", "workflows.yaml:1: unsupported legacy format (2021)"),
        ("workflow:\n  - name: x\n", "workflows.yaml:1: unknown top-level key 'workflow'"),
        ("workflows:\n  - id: x\n", "workflows.yaml:2: unsupported legacy format (2021)"),
        ("workflows: 3\n", "'workflows' must be a list"),
        ("- a\n", "expected a mapping"),
        ("workflows:\n  - provider: bash\n", "needs a 'name'"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, fragment: str) -> None:
    write_repo(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(tmp_path)


def test_workflows_as_single_mapping_and_surface_styles(tmp_path: Path) -> None:
    text = (
        '# comment\nworkflows:\n   name: "a"   \n   provider: bash\n'
        '   artifacts: [ "out" ]\n   commands:\n   - echo hi'
    )
    write_repo(tmp_path, text)
    assert load_config(tmp_path).workflow_names() == ["a"]


def test_variables_file(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        "workflows:\n  - name: w\n    provider: bash\n",
        "variables:\n  global:\n    lr: 0.00002\n  w:\n    epochs: 10\n    lr: 1.0\n",
    )
    assert load_config(tmp_path).variable_defaults("w") == {"lr": "1.0", "epochs": "10"}


def test_variable_must_be_scalar(tmp_path: Path) -> None:
    write_repo(tmp_path, "workflows: []\n", "variables:\n  w:\n    x: [1]\n")
    with pytest.raises(ConfigError, match=r"^\.dstack/variables.yaml:3: variable 'x'"):
        load_config(tmp_path)
