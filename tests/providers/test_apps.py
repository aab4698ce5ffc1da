from __future__ import annotations

import pytest

from dstack.models.job import AppSpec, PortSpec
from dstack.providers import SubmissionContext, job_specs
from dstack.providers.app import served_apps

from .builders import workflow

CTX = SubmissionContext(token_factory=lambda: "T0KEN")


def test_streamlit_serves_the_file_on_port_0() -> None:
    [job] = job_specs(workflow("streamlit", file="app.py", setup=["echo hi"]), CTX)
    assert job.commands == [
        "echo hi",
        "python -m pip show streamlit >/dev/null 2>&1 || pip install -q streamlit",
        'streamlit run app.py --server.address "${DSTACK_APP_HOST:-0.0.0.0}"'
        ' --server.port "$PORT_0" --server.headless true',
    ]
    assert job.ports == [PortSpec()]
    assert job.apps == [AppSpec(name="streamlit", port_index=0)]


def test_gradio_reads_address_and_port_from_its_env() -> None:
    [job] = job_specs(workflow("gradio", file="app.py"), CTX)
    assert job.commands[-1] == (
        'GRADIO_SERVER_NAME="${DSTACK_APP_HOST:-0.0.0.0}" GRADIO_SERVER_PORT="$PORT_0"'
        " python app.py"
    )


def test_fastapi_runs_uvicorn_and_installs_what_is_missing() -> None:
    [job] = job_specs(workflow("fastapi", app="main:app", requirements="r.txt"), CTX)
    assert job.commands == [
        "pip install -r r.txt",
        "python -m pip show fastapi >/dev/null 2>&1 || pip install -q fastapi",
        "python -m pip show uvicorn >/dev/null 2>&1 || pip install -q uvicorn",
        'uvicorn main:app --host "${DSTACK_APP_HOST:-0.0.0.0}" --port "$PORT_0"',
    ]


@pytest.mark.parametrize(("provider", "key"), [("streamlit", "file"), ("fastapi", "app")])
def test_apps_need_their_target(provider: str, key: str) -> None:
    from dstack.errors import ConfigError

    with pytest.raises(ConfigError, match=f"has no '{key}'"):
        job_specs(workflow(provider), CTX)


@pytest.mark.parametrize(
    ("provider", "app", "path"), [("lab", "lab", "/lab"), ("notebook", "notebook", "/tree")]
)
def test_jupyter_gets_a_token_in_its_env_and_url(provider: str, app: str, path: str) -> None:
    [job] = job_specs(workflow(provider), CTX)
    assert job.commands[-1] == (
        f'jupyter {app} --ip "${{DSTACK_APP_HOST:-0.0.0.0}}" --port "$PORT_0"'
        " --no-browser --allow-root"
    )
    assert job.env["JUPYTER_TOKEN"] == "T0KEN"
    assert job.apps == [
        AppSpec(name=provider, port_index=0, url_path=path, url_query={"token": "T0KEN"})
    ]


def test_code_gets_a_connection_token() -> None:
    [job] = job_specs(workflow("code"), CTX)
    assert "openvscode-server" in job.commands[-1]
    assert '--port "$PORT_0"' in job.commands[-1]
    assert job.env["DSTACK_CODE_TOKEN"] == "T0KEN"
    assert "T0KEN" not in "\n".join(job.commands)  # off the command line: `ps` shows it
    assert job.apps[0].url_query == {"tkn": "T0KEN"}


def test_tokens_are_fresh_for_every_job() -> None:
    [a] = job_specs(workflow("lab"), SubmissionContext())
    [b] = job_specs(workflow("lab"), SubmissionContext())
    assert a.env["JUPYTER_TOKEN"] != b.env["JUPYTER_TOKEN"]
    assert len(a.env["JUPYTER_TOKEN"]) >= 16


def test_the_apps_port_comes_after_the_ports_the_workflow_asked_for() -> None:
    wf = workflow("code", port_count=1, setup=["gunicorn main:app --bind 0.0.0.0:$PORT_0 &"])
    [job] = job_specs(wf, CTX)
    assert job.ports == [PortSpec(), PortSpec()]
    assert '--port "$PORT_1"' in job.commands[-1]
    assert job.apps[0].port_index == 1


def test_served_apps_add_the_ports_no_app_uses() -> None:
    [lab] = job_specs(workflow("lab", port_count=1), CTX)
    [bash] = job_specs(
        workflow("bash", commands=["python -m http.server $PORT_0"], port_count=1), CTX
    )

    assert [(a.name, a.port_index) for a in served_apps(lab)] == [("lab", 1), ("port 0", 0)]
    assert served_apps(bash) == [AppSpec(name="port 0", port_index=0)]
