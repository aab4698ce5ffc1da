"""Jupyter Notebook, Gradio and VS Code (openvscode-server) as a user runs them: the real
application on the port the runner allocated, at the URL `dstack run` prints, with its token
where it takes one; and an app's package installed into a job whose environment lacks it."""

from __future__ import annotations

import json
import platform
import socket

import httpx
import pytest
from tests.e2e.conftest import Env
from tests.e2e.test_apps import (
    _attached,
    _execute,
    _outside_address,
    _running_run,
    _stop,
    app_env,
)

from dstack.providers.code import RELEASE_URL

__all__ = ["app_env"]  # the fixture


def test_jupyter_notebook_answers_at_tree_with_its_token_and_runs_code(app_env: Env) -> None:
    app_env.workflows(
        """
        workflows:
          - name: notebook
            provider: notebook
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "notebook") as attached:
        match = attached.expect(r"^app 'notebook': (http://127\.0\.0\.1:\d+)/tree\?token=([\w-]+)$")
        base, token = match.group(1), match.group(2)

        login = httpx.get(f"{base}/tree")  # without the token: to the login page
        assert login.status_code == 302
        assert "/login" in login.headers["location"]
        assert httpx.get(f"{base}/api/kernels").status_code == 403
        page = httpx.get(f"{base}/tree?token={token}")
        assert page.status_code == 200
        assert '"notebookPage": "tree"' in page.text  # Notebook 7's file browser
        auth = {"Authorization": f"token {token}"}
        kernel = httpx.post(f"{base}/api/kernels", headers=auth, json={}).json()
        assert _execute(base, token, kernel["id"], "print(6*7)") == "42"
        _stop(app_env, _running_run(app_env), attached)


GRADIO_APP = """
import gradio as gr


def greet(name: str) -> str:
    return f"Hello {name}!"


gr.Interface(fn=greet, inputs="text", outputs="text", api_name="greet").launch()
"""


def test_a_gradio_app_answers_and_computes_through_its_api(app_env: Env) -> None:
    app_env.write("app.py", GRADIO_APP)
    app_env.workflows(
        """
        workflows:
          - name: demo
            provider: gradio
            file: app.py
            env:
              - GRADIO_ANALYTICS_ENABLED=False
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "demo") as attached:
        match = attached.expect(r"^app 'gradio': (http://127\.0\.0\.1:(\d+))/$", timeout=120)
        base, port = match.group(1), match.group(2)

        assert httpx.get(f"{base}/").status_code == 200
        config = httpx.get(f"{base}/config").json()
        assert config["mode"] == "interface"
        assert _gradio_call(base, config.get("api_prefix", ""), "greet", "dstack") == [
            "Hello dstack!"
        ]
        # Gradio took its port (and address) from the env the provider set
        attached.expect(rf"Running on local URL:\s+http://127\.0\.0\.1:{port}\b")
        with pytest.raises(ConnectionRefusedError):  # a plain process: loopback only
            socket.create_connection((_outside_address(), int(port)), timeout=5).close()
        _stop(app_env, _running_run(app_env), attached)


def _gradio_call(base: str, prefix: str, api_name: str, *data: str) -> object:
    """Call an endpoint through Gradio's HTTP API: POST starts an event, its stream ends with
    `event: complete` and the outputs (`event: error` when the function raised)."""
    started = httpx.post(f"{base}{prefix}/call/{api_name}", json={"data": list(data)})
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    url = f"{base}{prefix}/call/{api_name}/{event_id}"
    with httpx.stream("GET", url, timeout=60) as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                assert event == "complete", line
                return json.loads(line.removeprefix("data:"))
    raise AssertionError(f"{url} ended without a result")


FASTAPI_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello() -> dict[str, str]:
    return {"hello": "venv"}
"""


def test_an_apps_package_is_installed_into_a_job_that_lacks_it(app_env: Env) -> None:
    # `requirements` gives the job a fresh venv: no fastapi nor uvicorn until the provider
    # installs them there
    app_env.write("main.py", FASTAPI_APP)
    app_env.write("requirements.txt", "# nothing: the provider brings the app's packages\n")
    app_env.workflows(
        """
        workflows:
          - name: api
            provider: fastapi
            app: main:app
            requirements: requirements.txt
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "api") as attached:
        url = attached.expect(r"^app 'fastapi': (http://127\.0\.0\.1:\d+/)$", timeout=240).group(1)
        assert httpx.get(url).json() == {"hello": "venv"}
        name = _running_run(app_env)
        logs = app_env.dstack("logs", "--runner", name)
        assert "creating a virtual environment" in logs.err
        _stop(app_env, name, attached)


def test_vs_code_that_cannot_be_downloaded_fails_the_run_saying_so(app_env: Env) -> None:
    app_env.workflows(
        """
        workflows:
          - name: ide
            provider: code
            env:
              - https_proxy=http://127.0.0.1:1
        """
    )
    app_env.commit()
    # a proxy nothing listens on: the download fails here whether or not GitHub is reachable
    result = app_env.dstack("run", "ide")
    assert result.code == 1, result
    output = result.out + result.err
    assert "cannot download openvscode-server from https://github.com/" in output
    assert "Traceback" not in output


def _openvscode_release() -> str:
    """The URL the `code` provider downloads openvscode-server from, once it is known to be
    reachable (the test needs GitHub's release downloads)."""
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    url = RELEASE_URL.replace("$ARCH", arch)
    try:
        head = httpx.head(url, follow_redirects=True, timeout=30)
    except httpx.TransportError as exc:
        # Not `unavailable`: CI machines may have no route to GitHub at all, and nothing in
        # the project can provide one. The failure path above runs everywhere.
        pytest.skip(f"needs a download of openvscode-server ({url}): {exc}")
    assert head.status_code == 200, f"the code provider's download is gone: {url} {head}"
    return url


@pytest.mark.timeout(900)
def test_vs_code_answers_with_its_connection_token_only(app_env: Env) -> None:
    _openvscode_release()
    app_env.workflows(
        """
        workflows:
          - name: ide
            provider: code
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "ide") as attached:
        # the first start downloads openvscode-server (about 60 MB) into the job
        match = attached.expect(
            r"^app 'code': (http://127\.0\.0\.1:\d+)/\?tkn=([\w-]+)$", timeout=600
        )
        base, token = match.group(1), match.group(2)

        assert httpx.get(f"{base}/").status_code == 403
        assert httpx.get(f"{base}/?tkn=not-{token}").status_code == 403
        with httpx.Client(follow_redirects=True) as browser:
            page = browser.get(f"{base}/?tkn={token}")  # the token becomes a cookie
            assert page.status_code == 200
            assert "workbench" in page.text
            assert browser.get(f"{base}/").status_code == 200  # the cookie is enough now
        _stop(app_env, _running_run(app_env), attached)
