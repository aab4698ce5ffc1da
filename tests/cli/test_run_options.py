from __future__ import annotations

import pytest

from dstack.cli.run import split_run_options
from dstack.errors import ConfigError


def test_run_options_after_the_workflow_are_taken_out() -> None:
    rest, found = split_run_options(["--epochs", "3", "-d", "--tag", "v1", "--explain"], {"epochs"})
    assert rest == ["--epochs", "3"]
    assert found == {"detach": True, "tag": "v1", "explain": True}


def test_declared_variables_and_arguments_after_double_dash_win() -> None:
    rest, found = split_run_options(["--reload=yes", "--", "-d", "--explain"], {"reload"})
    assert rest == ["--reload=yes", "--", "-d", "--explain"]
    assert found == {}


def test_tag_with_equals_and_missing_value() -> None:
    assert split_run_options(["-t=v2"], set())[1] == {"tag": "v2"}
    with pytest.raises(ConfigError, match="needs a tag name"):
        split_run_options(["--tag"], set())
