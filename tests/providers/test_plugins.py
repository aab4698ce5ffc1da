"""Provider plugins (entry-point group `dstack.providers`), found the way pip leaves them: a
`*.dist-info` folder with `entry_points.txt` on `sys.path` (what `pip install` writes)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from tests.providers.builders import workflow

from dstack.errors import ConfigError
from dstack.providers import SubmissionContext
from dstack.providers.plugins import PluginProviders
from dstack.providers.registry import PROVIDERS

GOOD = """
from dstack.providers.base import Provider, base_job_spec

class Greeter(Provider):
    name = "{name}"
    usage = "[NAME]..."
    positional = "args"

    def job_spec(self, workflow, ctx):
        return base_job_spec(workflow, ctx, commands=["echo hi " + " ".join(workflow.args)])
"""


def install(site: Path, dist: str, points: dict[str, str], module: str, code: str) -> None:
    """What `pip install` leaves: the module and its distribution's metadata."""
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[dstack.providers]\n{lines}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def plugins() -> PluginProviders:
    return PluginProviders(builtin=set(PROVIDERS))


def test_a_plugin_is_found_and_builds_its_job(site: Path) -> None:
    install(
        site,
        "dstack-provider-greet",
        {"greet": "greet_mod:Greeter"},
        "greet_mod",
        GOOD.format(name="greet"),
    )
    found = plugins()
    assert found.found()["greet"].package == "dstack-provider-greet 1.0"
    provider = found.get("greet")
    assert provider is not None
    (job,) = provider.job_specs(workflow("greet", args=["you"]), SubmissionContext())
    assert job.commands == ["echo hi you"]


def test_an_unknown_name_is_none(site: Path) -> None:
    assert plugins().get("nothing-provides-this") is None


def test_a_plugin_that_raises_at_import_is_one_line_naming_its_package(site: Path) -> None:
    install(
        site,
        "dstack-provider-broken",
        {"broken": "broken_mod:P"},
        "broken_mod",
        "raise RuntimeError('missing config\\nsecond line')\n",
    )
    with pytest.raises(ConfigError) as err:
        plugins().get("broken")
    assert err.value.message == (
        "provider 'broken' of package dstack-provider-broken 1.0 failed to load"
        " (broken_mod:P): RuntimeError: missing config"
    )
    assert (
        err.value.hint == "fix the package, or uninstall it: pip uninstall dstack-provider-broken"
    )


@pytest.mark.parametrize(
    ("target", "code", "problem"),
    [
        ("m1:P", "P = 3\n", "int is not a dstack.providers.base.Provider"),
        ("m2:Missing", "X = 1\n", "AttributeError"),
        ("m3:Greeter", GOOD.format(name="other"), "its name is 'other', not 'odd'"),
    ],
)
def test_what_is_not_a_provider_is_refused(
    site: Path, target: str, code: str, problem: str
) -> None:
    install(site, "dstack-provider-odd", {"odd": target}, target.split(":")[0], code)
    with pytest.raises(ConfigError, match=problem):
        plugins().get("odd")


def test_a_built_in_name_wins_and_the_plugin_is_named_in_a_warning(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(
        site,
        "dstack-provider-evil",
        {"bash": "evil_mod:Greeter"},
        "evil_mod",
        GOOD.format(name="bash"),
    )
    with caplog.at_level(logging.WARNING):
        found = plugins().found()
    assert "bash" not in found
    assert (
        "provider 'bash' of package dstack-provider-evil 1.0 is ignored: 'bash' is a built-in"
        in caplog.text
    )
