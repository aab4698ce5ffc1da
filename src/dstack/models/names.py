"""The one rule for names: runs, tags, users, workflows, runners, backends (and, stricter, secrets).

A name is at most `NAME_MAX` characters: ASCII letters and digits, then also `.`, `_`, `-`
and `@`; it starts with a letter or a digit. So a name is always one URL path segment and one
shell word, never `.` or `..`, never an option (`-x`), never a blank, a control character or
a look-alike Unicode letter. Secret names are environment variable names.

Request models that *create* something use these types (a bad name is a 422 before anything is
stored); models of answers do not, so a row stored before the rule existed is still listed,
and requests that *refer* to a name (delete, show) take any string, so it can be removed.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, Field

from dstack.errors import ConfigError

NAME_MAX = 100
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
NAME_RULE = (
    f"use letters, digits and . _ - @, starting with a letter or a digit "
    f"(at most {NAME_MAX} characters)"
)
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_NAME_RULE = (
    "use letters, digits and underscores, not starting with a digit "
    f"(an environment variable name, at most {NAME_MAX} characters)"
)
SECRET_VALUE_MAX = 64 * 1024
"""Bytes of a secret's value (UTF-8): it travels in every job's environment."""

_NAME = re.compile(NAME_PATTERN.removesuffix("$"))
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN.removesuffix("$"))


def name_problem(value: str, *, secret: bool = False) -> str | None:
    """What is wrong with `value` as a name (None: nothing), as the end of a sentence."""
    if len(value) > NAME_MAX:
        return f"it is longer than {NAME_MAX} characters"
    pattern = _SECRET_NAME if secret else _NAME
    if not pattern.fullmatch(value):
        return SECRET_NAME_RULE if secret else NAME_RULE
    return None


def check_name(value: str, kind: str) -> str:
    """`value` if it is a valid `kind` name ("tag", "run", "secret", ...); else `ConfigError`
    with the rule as its hint (the CLI and the configuration files check their names so)."""
    if name_problem(value, secret=kind == "secret") is None:
        return value
    rule = SECRET_NAME_RULE if kind == "secret" else NAME_RULE
    raise ConfigError(_invalid(value, kind), hint=rule)


def check_name_message(value: str, kind: str) -> str:
    """One line: which name is invalid and why."""
    problem = name_problem(value, secret=kind == "secret")
    return f"{_invalid(value, kind)}: {problem}"


def _invalid(value: str, kind: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return f"invalid {kind} name {shown!r}"


def secret_value_problem(value: str) -> str | None:
    """What is wrong with `value` as a secret's value (None: nothing)."""
    if "\x00" in value:
        return "a secret value cannot contain a NUL character"
    if len(value) > SECRET_VALUE_MAX or len(value.encode()) > SECRET_VALUE_MAX:
        return f"a secret value is at most {SECRET_VALUE_MAX // 1024} KiB"
    return None


def _rule(kind: str) -> AfterValidator:
    """Checks a `kind` name; the error says which name and the rule."""

    def check(value: str) -> str:
        if name_problem(value, secret=kind == "secret") is not None:
            raise ValueError(check_name_message(value, kind))
        return value

    return AfterValidator(check)


_SCHEMA = Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": NAME_MAX})
_SECRET_SCHEMA = Field(json_schema_extra={"pattern": SECRET_NAME_PATTERN, "maxLength": NAME_MAX})


def _check_secret_value(value: str) -> str:
    problem = secret_value_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Checked where a name is created; see the module's docstring.
RunName = Annotated[str, _SCHEMA, _rule("run")]
TagName = Annotated[str, _SCHEMA, _rule("tag")]
UserName = Annotated[str, _SCHEMA, _rule("user")]
WorkflowName = Annotated[str, _SCHEMA, _rule("workflow")]
RunnerName = Annotated[str, _SCHEMA, _rule("runner")]
BackendName = Annotated[str, _SCHEMA, _rule("backend")]
SecretName = Annotated[str, _SECRET_SCHEMA, _rule("secret")]
SecretValue = Annotated[
    str,
    Field(json_schema_extra={"maxLength": SECRET_VALUE_MAX}),
    AfterValidator(_check_secret_value),
]


def url_segment(name: str) -> str:
    """`name` as one URL path segment, whatever it holds: a name stored before the rule
    (`..`, a space, a `?`) is still reached, never a neighbouring path."""
    quoted = quote(name, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
