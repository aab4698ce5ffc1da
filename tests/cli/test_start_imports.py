"""What the CLI keeps out of its start: pydantic's plugin loader (it would read the entry
points of every installed distribution before the first model is built)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_models_validate_without_pydantic_reading_installed_packages() -> None:
    out = _run(
        """
        import sys
        from dstack.cli.main import _skip_unused_imports
        _skip_unused_imports()
        from dstack.models.runs_api import LogsPage
        page = LogsPage.model_validate({"events": [], "cursor": "", "finished": True})
        print(page.finished, "importlib.metadata" in sys.modules)
        """
    )
    assert out.split() == ["True", "False"]


def test_the_real_plugin_loader_answers_what_the_stand_in_does_not() -> None:
    out = _run(
        """
        import sys
        from dstack.cli.main import _skip_unused_imports
        _skip_unused_imports()
        loader = sys.modules["pydantic.plugin._loader"]
        print(list(loader.get_plugins()), loader.PYDANTIC_ENTRY_POINT_GROUP)
        """
    )
    assert out.split() == ["[]", "pydantic"]
