"""Whatever is in `.dstack/`, loading and resolving raise nothing but `ConfigError`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.config.helpers import write_repo

from dstack.config import load_config, resolve_workflow
from dstack.errors import ConfigError

KEYS = [
    "name", "provider", "image", "commands", "python", "version", "env", "environment",
    "artifacts", "cache", "deps", "depends-on", "resources", "gpu", "memory", "count",
    "ports", "template", "path", "mount", "workflow", "tag", "help", "args", "triggers",
    "repo", "include", "id", "setup", "cpu", "nodes", "v100/gpu", "registry_auth",
]  # fmt: skip
WORDS = ["bash", "python3.9", "docker", "${{ gpu }}", "$x", "16GB", "w", ":t", "a:latest", "3.1"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True),
    st.sampled_from(WORDS), st.text(max_size=12),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=20,
)
workflow = st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(
    lambda d: {"name": "w", **d}
)
documents = st.one_of(
    values,
    st.fixed_dictionaries({"workflows": st.lists(workflow, max_size=3)}),
    st.fixed_dictionaries({"workflows": workflow}),
)
variables = st.one_of(
    st.none(),
    st.fixed_dictionaries({"variables": st.dictionaries(st.sampled_from(["w", "global"]), values)}),
)
yaml_text = st.text(
    alphabet=st.sampled_from(list("workflows:name-[]{}$&*!|>#'\"\n \t0123456789.,")), max_size=80
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_and_resolve(workflows_text: str, variables_text: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_repo(Path(tmp), workflows_text, variables_text)
        message = ".dstack/"
        try:
            config = load_config(root)
            for name in config.workflow_names():
                resolve_workflow(config, name, ["--gpu", "2", "x"])
        except ConfigError as exc:
            message = exc.message
    assert message.startswith(".dstack/"), message


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, allow_unicode=True)


@SETTINGS
@given(documents, variables)
def test_structured_documents_raise_only_config_errors(doc: Any, vars_doc: Any) -> None:
    _load_and_resolve(_dump(doc), None if vars_doc is None else _dump(vars_doc))


@SETTINGS
@given(yaml_text, st.one_of(st.none(), yaml_text))
def test_arbitrary_text_raises_only_config_errors(text: str, vars_text: str | None) -> None:
    _load_and_resolve(text, vars_text)
