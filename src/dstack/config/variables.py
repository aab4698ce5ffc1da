"""Variables (`.dstack/variables.yaml` + CLI overrides) and `${{ ... }}` interpolation."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from dstack.config.files import LineDict
from dstack.config.location import Where

Scalar = str | int | float | bool | None

RUN_NAME_ENV = "${DSTACK_RUN_NAME}"
JOB_ID_ENV = "${DSTACK_JOB_ID}"

# `${{ expr }}` or a legacy bare `$name` / `${name}`; one pass, so substituted text is final.
_REFERENCE = re.compile(
    r"\$\{\{\s*(?P<expr>[^}]*?)\s*\}\}"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
_LEGACY_SPECIAL = ("variables_as_args", "run_name", "job_id")


@dataclass(frozen=True)
class Variable:
    """A variable's typed value (for a value that is exactly ``${{ x }}``) and its text."""

    value: Scalar
    text: str

    @classmethod
    def from_cli(cls, text: str) -> Variable:
        """``--gpu 2`` gives the int 2 for typed use; the text stays as typed."""
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = text
        value = parsed if isinstance(parsed, int | float | bool) else text
        return cls(value=value, text=text)


def variable_from_yaml(value: Any, raw_text: str | None) -> Variable:
    """A variable from variables.yaml; ``raw_text`` is the scalar as written in the file."""
    if value is None:
        return Variable(value=None, text="")
    if isinstance(value, str):
        return Variable(value=value, text=value)
    if isinstance(value, bool):
        return Variable(value=value, text="true" if value else "false")
    return Variable(value=value, text=raw_text if raw_text is not None else str(value))


def env_name(variable: str) -> str:
    """``batch-size`` → ``BATCH_SIZE``: how a job sees a variable."""
    return variable.upper().replace("-", "_")


def split_overrides(
    argv: list[str], declared: Mapping[str, Variable], where: Where
) -> tuple[dict[str, Variable], list[str]]:
    """Take ``--name value`` / ``--name=value`` for declared variables out of ``argv``.

    Everything else is returned, in order, as the run's arguments. After a bare ``--`` no
    argument is taken as a variable (the ``--`` itself is dropped).
    """
    overrides: dict[str, Variable] = {}
    run_args: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            run_args.extend(argv[index:])
            break
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--") or key not in declared:
            run_args.append(arg)
            continue
        if not eq:
            if index >= len(argv):
                raise where.error(
                    f"variable option --{key} needs a value", hint=f"pass --{key} VALUE"
                )
            value = argv[index]
            index += 1
        overrides[key] = Variable.from_cli(value)
    return overrides, run_args


@dataclass(frozen=True)
class Interpolator:
    """Substitutes references in every string of a workflow's raw mapping.

    `used` collects the special names it substituted (`run_args`, ...): whether the workflow
    places the run's arguments anywhere."""

    variables: Mapping[str, Variable]
    run_args: list[str]
    where: Where
    used: set[str] = field(default_factory=set)

    def apply(self, value: Any, line: int | None = None) -> Any:
        """Return a copy of ``value`` with every string interpolated (mappings keep lines)."""
        if isinstance(value, LineDict):
            result = LineDict().copy_lines(value)
            for key, item in value.items():
                result[key] = self.apply(item, value.key_line(key))
            return result
        if isinstance(value, list):
            return [self.apply(item, line) for item in value]
        if isinstance(value, str):
            return self.string(value, line)
        return value

    def string(self, text: str, line: int | None) -> Any:
        """Interpolate one string; a string that is exactly ``${{ var }}`` keeps its type."""
        match = _REFERENCE.fullmatch(text.strip())
        if match and match.group("expr") is not None:
            found = self._lookup(match.group("expr"))
            if found is not None and found.value is not None:
                return found.value
        return _REFERENCE.sub(lambda m: self._replace(m, line), text)

    def _replace(self, match: re.Match[str], line: int | None) -> str:
        expr = match.group("expr")
        if expr is not None:
            return self._expression(expr, match.group(0), line)
        name = match.group("braced") or match.group("bare")
        if name in self.variables:
            return self.variables[name].text
        if name in _LEGACY_SPECIAL:
            return self._special(name)
        return match.group(0)  # a shell variable such as $PATH or $PORT_0

    def _expression(self, expr: str, original: str, line: int | None) -> str:
        if expr.startswith("secrets."):
            return original  # filled in at run time, never stored in the spec
        found = self._lookup(expr)
        if found is not None:
            return found.text
        special = {"run.args": "run_args", "run.name": "run_name", "job.id": "job_id"}
        if expr in special:
            return self._special(special[expr])
        known = [*self.variables, "run.args", "run.name", "job.id", "secrets.NAME"]
        raise self.where.at(line).error(
            f"unknown reference '${{{{ {expr} }}}}'",
            hint="known names: " + ", ".join(known),
        )

    def _lookup(self, expr: str) -> Variable | None:
        name = expr.removeprefix("variables.")
        return self.variables.get(name)

    def _special(self, name: str) -> str:
        self.used.add(name)
        if name == "run_args":
            return shlex.join(self.run_args)
        if name == "variables_as_args":
            return " ".join(
                f"--{key} {shlex.quote(var.text)}" for key, var in self.variables.items()
            )
        return RUN_NAME_ENV if name == "run_name" else JOB_ID_ENV
