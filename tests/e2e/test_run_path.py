"""`dstack run` as a person types it: mistakes caught, what is uploaded said (and asked about
on a terminal), `-d` for scripts, Ctrl+C. Through the real CLI; a pseudo-terminal where the
terminal matters (the question, the progress bar, Ctrl+C typed)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Env

RUN_NAME = re.compile(r"^[a-z]+-[a-z]+-\d+$")

WORKFLOWS = """
workflows:
  - name: train
    provider: python
    file: train.py
  - name: evaluate
    provider: bash
    commands:
      - echo "evaluating ${{ checkpoint }}"
"""

VARIABLES = """
variables:
  train:
    epochs: 10
  evaluate:
    checkpoint: last
"""


def _take_the_terminal() -> None:
    """In the child, a session leader: the pseudo-terminal becomes its controlling terminal
    (Ctrl+C typed there is SIGINT to its foreground group, as at a shell), and SIGINT is not
    ignored even when the test run itself ignores it."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`dstack ARGS` on a pseudo-terminal: stdin, stdout and stderr are its slave side, and
    it is the command's controlling terminal."""

    def __init__(self, env: Env, *args: str, extra: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        self.master = master
        self.output = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dstack", *args],
            cwd=env.repo,
            env={**env.environ(), "TERM": "xterm", "COLUMNS": "100", **(extra or {})},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_the_terminal,
        )
        os.close(slave)

    def expect(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            if time.monotonic() > deadline or not self._read(deadline):
                self.kill()
                raise AssertionError(f"{pattern!r} not shown; the terminal shows:\n{self.text()}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 120) -> int:
        """The command's exit code once it ended and closed the terminal; past `timeout` it
        is killed and the test fails, showing the terminal."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        try:
            code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running; the terminal shows:\n{self.text()}") from None
        finally:
            os.close(self.master)
        return code

    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r", "")

    def kill(self) -> None:
        """End the command (and what it started in its session) where a test gives up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting up to `deadline`); False once the terminal closed."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return time.monotonic() < deadline
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the slave side exited
            return False
        self.output += chunk
        return bool(chunk)


def _runs(env: Env) -> list[str]:
    import json

    listed = env.dstack("ps", "-a", "--json")
    assert listed.code == 0, listed
    return [run["name"] for run in json.loads(listed.out)]


# --- mistakes caught ---------------------------------------------------------------------


@pytest.fixture
def pipeline(process_env: Env) -> Env:
    process_env.workflows(WORKFLOWS)
    process_env.write(".dstack/variables.yaml", VARIABLES)
    process_env.write(
        "train.py",
        "import os, sys\nprint('epochs', os.environ['EPOCHS'], 'args', sys.argv[1:])\n",
    )
    process_env.commit()
    return process_env


def test_a_typo_in_a_variable_is_an_error_with_the_closest_match(pipeline: Env) -> None:
    result = pipeline.dstack("run", "train", "--epocs", "2")
    assert result.code == 1, result
    assert "unknown variable --epocs for workflow 'train'; did you mean --epochs?" in result.err
    # `--` passes it to the script, as the hint says
    assert "dstack run train -- --epocs" in result.err
    ran = pipeline.dstack("run", "train", "--epochs", "3", "--", "--epocs", "2")
    assert ran.code == 0, ran
    assert "epochs 3 args ['--epocs', '2']" in ran.out


def test_a_variable_of_another_workflow_names_where_it_is_defined(pipeline: Env) -> None:
    result = pipeline.dstack("run", "evaluate", "--epochs", "2")
    assert result.code == 1, result
    assert (
        "--epochs is a variable of workflow 'train' (.dstack/variables.yaml), not of 'evaluate'"
        in result.err
    )
    # a bash workflow that places no ${{ run.args }} takes no other argument either
    result = pipeline.dstack("run", "evaluate", "now")
    assert result.code == 1, result
    assert "workflow 'evaluate' takes no arguments, got 'now'" in result.err
    assert "--checkpoint" in result.err
    assert _runs(pipeline) == []


def test_a_typo_in_a_workflow_name_says_did_you_mean(pipeline: Env) -> None:
    result = pipeline.dstack("run", "trian")
    assert result.code == 1, result
    assert "no workflow 'trian'; did you mean 'train'?" in result.err


def test_the_early_docs_syntax_gives_dstack_its_options_and_the_script_the_rest(
    process_env: Env,
) -> None:
    env = process_env
    env.write(
        "train.py",
        "import os, pathlib, sys\nprint('args', sys.argv[1:], 'SEED', os.environ['SEED'])\n"
        "pathlib.Path('checkpoint').mkdir()\npathlib.Path('checkpoint/w').write_text('1')\n",
    )
    env.commit()
    argv = "train.py --epoch 100 --env SEED=2 --batch-size 128 --artifact checkpoint --cpu 1"
    result = env.dstack("run", "python", *argv.split(), "--", "--cpu", "8")
    assert result.code == 0, result
    assert "args ['--epoch', '100', '--batch-size', '128', '--cpu', '8'] SEED 2" in result.out
    [name] = _runs(env)
    listed = env.dstack("ls", name)
    assert listed.code == 0, listed
    assert "checkpoint" in listed.out


def test_keys_a_provider_ignores_are_one_warning_line_each(process_env: Env) -> None:
    process_env.workflows(
        """
        workflows:
          - name: train
            provider: python
            file: train.py
            commands: [echo never]
            entrypoint: /bin/sh -c
        """
    )
    process_env.write("train.py", "print('trained')\n")
    process_env.commit()
    result = process_env.dstack("run", "train")
    assert result.code == 0, result
    warnings = [line for line in result.err.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: .dstack/workflows.yaml:2: workflow 'train': 'commands' is ignored by the"
        " python provider",
        "Warning: .dstack/workflows.yaml:2: workflow 'train': 'entrypoint' is ignored by the"
        " python provider",
    ]
    assert "trained" in result.out


# --- scripts ----------------------------------------------------------------------------


def test_run_detached_prints_only_the_run_name_on_stdout(process_env: Env) -> None:
    result = process_env.dstack("run", "-d", "bash", "-c", "echo hi")
    assert result.code == 0, result
    name = result.out.strip()
    assert RUN_NAME.match(name), result
    assert result.out == name + "\n"
    assert name in result.err  # the table, for a person, is on stderr
    assert process_env.wait_for(name, {"done"})["name"] == name


def test_the_local_server_started_with_another_executor_is_said_not_ignored(
    process_env: Env,
) -> None:
    assert process_env.dstack("run", "bash", "-c", "true").code == 0  # starts it: process
    process_env.extra_env["DSTACK_EXECUTOR"] = "docker"
    result = process_env.dstack("run", "bash", "-c", "true")
    assert result.code == 1, result
    assert (
        "DSTACK_EXECUTOR=docker, but the local server's runner runs jobs with the process"
        " executor" in result.err
    )
    assert "dstack server stop" in result.err
    assert len(_runs(process_env)) == 1


# --- uploads ------------------------------------------------------------------------------


def test_dstackignore_leaves_untracked_files_out_and_the_upload_is_summed_up(
    process_env: Env,
) -> None:
    env = process_env
    env.write(".dstackignore", "data/\n*.ckpt\n")
    env.write("data/big.bin", "x" * 50_000)
    env.write("model.ckpt", "weights")
    env.write("notes.txt", "kept")
    result = env.dstack("run", "bash", "-c", "ls data model.ckpt notes.txt 2>&1 || true")
    assert result.code == 0, result
    assert "notes.txt" in result.out
    assert "'data': No such file" in result.out
    assert "'model.ckpt': No such file" in result.out
    assert re.search(r"^Uploading local changes: 2 files, \d+ B ", result.err, re.M), result


def test_without_a_terminal_a_big_upload_goes_on_naming_the_biggest_files(
    process_env: Env,
) -> None:
    env = process_env
    env.extra_env["DSTACK_UPLOAD_CONFIRM_SIZE"] = "20kB"
    env.write("big.bin", "x" * 40_000)
    env.write("small.txt", "y")
    result = env.dstack("run", "bash", "-c", "wc -c < big.bin")
    assert result.code == 0, result
    assert "40000" in result.out
    lines = result.err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Uploading local changes"))
    assert lines[first].startswith("Uploading local changes: 2 files, ")
    assert lines[first + 1].split()[-1] == "big.bin"
    assert lines[first + 2].split()[-1] == "small.txt"


def test_on_a_terminal_a_big_upload_is_asked_about(process_env: Env) -> None:
    env = process_env
    limit = {"DSTACK_UPLOAD_CONFIRM_SIZE": "20kB"}
    env.write("big.bin", "x" * 40_000)

    no = Terminal(env, "run", "bash", "-c", "echo ran", extra=limit)
    no.expect(r"Upload [\d.]+ KiB\? \(over 20\.0 KiB\) \[y/N\]")
    no.send("n\n")
    assert no.finish() == 1
    assert "nothing was uploaded or submitted" in no.text()
    assert ".dstackignore" in no.text()
    assert _runs(env) == []

    yes = Terminal(env, "run", "bash", "-c", "echo ran", extra=limit)
    yes.expect(r"\[y/N\]")
    yes.send("y\n")
    assert yes.finish() == 0
    assert "ran" in yes.text()
    assert len(_runs(env)) == 1


def test_yes_skips_the_question_and_a_big_upload_shows_progress(process_env: Env) -> None:
    env = process_env
    env.write("big.bin", "x" * 3_000_000)
    term = Terminal(
        env,
        "run",
        "--yes",
        "bash",
        "-c",
        "wc -c < big.bin",
        extra={"DSTACK_UPLOAD_CONFIRM_SIZE": "1MB"},
    )
    assert term.finish() == 0, term.text()
    text = term.text()
    assert "[y/N]" not in text
    assert "big.bin" in text
    assert "uploading" in text  # the progress bar's label
    assert re.search(r"[\d.]+/[\d.]+ MiB", text), text  # IEC units, as every size
    assert not re.search(r"\bMB\b", text), text
    assert "3000000" in text


def test_a_small_upload_asks_nothing_on_a_terminal(process_env: Env) -> None:
    process_env.write("notes.txt", "kept")
    term = Terminal(process_env, "run", "bash", "-c", "cat notes.txt")
    assert term.finish() == 0, term.text()
    assert "[y/N]" not in term.text()
    assert "Uploading local changes: 1 file, " in term.text()


# --- Docker -------------------------------------------------------------------------------


@pytest.fixture
def docker_env(tmp_path: Path) -> Iterator[Env]:
    from tests.e2e.conftest import make_env

    from dstack.server.local import stop_local_server

    env = make_env(tmp_path, "docker")
    try:
        yield env
    finally:
        stop_local_server(env.home)


@pytest.mark.docker
def test_docker_provider_commands_run_in_an_image_without_bash(docker_env: Env) -> None:
    result = docker_env.dstack("run", "docker", "dstack-test/busybox", "-c", "echo from busybox")
    assert result.code == 0, result
    assert "from busybox" in result.out


@pytest.mark.docker
def test_a_default_image_that_cannot_be_pulled_says_how_to_run_without_docker(
    docker_env: Env,
) -> None:
    docker_env.extra_env["DSTACK_DEFAULT_IMAGE"] = "127.0.0.1:9/dstack-missing:1"
    result = docker_env.dstack("run", "bash", "-c", "true")
    assert result.code != 0, result
    shown = result.out + result.err
    assert "cannot pull image 127.0.0.1:9/dstack-missing:1" in shown
    assert "DSTACK_EXECUTOR=process dstack run" in shown


# --- a remote -----------------------------------------------------------------------------


def test_a_remote_run_missing_a_dependency_says_to_run_it_there_or_push_it(
    process_env: Env, tmp_path: Path
) -> None:
    from tests.e2e.remote_helpers import ADMIN_TOKEN, TeamServer

    server = TeamServer(home=tmp_path / "server-home")
    server.start()
    try:
        env = process_env
        configured = env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN)
        assert configured.code == 0, configured
        env.workflows(
            """
            workflows:
              - name: prepare
                provider: bash
                commands: [mkdir -p data]
                artifacts: [data]
              - name: train
                provider: bash
                commands: [ls data]
                depends-on: ["prepare:latest"]
            """
        )
        env.commit()
        result = env.dstack("run", "--remote", "train")
        assert result.code == 1, result
        assert "workflow 'prepare' has no successful run yet on the remote" in result.err
        assert "run it first: dstack run prepare --remote;" in result.err
        assert "dstack push RUN --remote" in result.err
    finally:
        server.stop()


# --- a commit sent as a bundle ------------------------------------------------------------


def test_a_commit_sent_as_a_bundle_is_announced_with_its_size_once(process_env: Env) -> None:
    env = process_env
    env.write("notes.txt", "first")
    env.commit("notes")
    commit = env.git("rev-parse", "HEAD").strip()

    first = env.dstack("run", "bash", "-c", "cat notes.txt")
    again = env.dstack("run", "bash", "-c", "cat notes.txt")

    assert first.code == 0, first
    assert first.out == "first"
    line = re.search(
        rf"^Uploading commit {commit[:12]}: a git bundle, ([\d.]+ [KM]?i?B) ", first.err, re.M
    )
    assert line, first.err
    assert again.code == 0, again
    assert "Uploading commit" not in again.err  # sent once per commit


def test_a_big_commit_shows_progress_on_a_terminal(process_env: Env) -> None:
    env = process_env
    env.write("weights.bin", os.urandom(3_000_000).hex()[:3_000_000])  # does not compress away
    env.commit("weights")
    term = Terminal(env, "run", "bash", "-c", "wc -c < weights.bin")
    assert term.finish() == 0, term.text()
    text = term.text()
    assert re.search(r"Uploading commit [0-9a-f]{12}: a git bundle, [\d.]+ MiB ", text), text
    assert "uploading" in text  # the progress bar's label
    assert re.search(r"[\d.]+/[\d.]+ MiB", text), text  # IEC units, as every size
    assert not re.search(r"\bMB\b", text), text
    assert "3000000" in text


# --- Ctrl+C -------------------------------------------------------------------------------

SLOW = """
workflows:
  - name: slow
    provider: bash
    commands: [echo started, sleep 600]
"""


def _ctrl_c_at_a_terminal(env: Env) -> tuple[Terminal, str]:
    """`dstack run slow` at a terminal, Ctrl+C typed once its job runs: the question shown."""
    env.workflows(SLOW)
    env.commit()
    term = Terminal(env, "run", "slow")
    term.expect(r"started\n")
    term.send("\x03")
    term.expect(r"Stop the run [a-z]+-[a-z]+-\d+\? \[y/N\]")
    name = re.findall(r"Stop the run (\S+)\?", term.text())[-1]
    return term, name


def test_ctrl_c_at_a_terminal_asks_and_yes_stops_the_run(process_env: Env) -> None:
    term, name = _ctrl_c_at_a_terminal(process_env)
    term.send("y\n")
    code = term.finish()

    assert "Stopping... (Ctrl+C again to detach)" in term.text()
    assert "Detached" not in term.text()
    assert code == 143, term.text()  # the job's: ended by SIGTERM, as `docker stop` does
    assert process_env.run_json(name)["status"] == "stopped"


def test_ctrl_c_at_a_terminal_asks_and_no_detaches_the_run_going_on(process_env: Env) -> None:
    term, name = _ctrl_c_at_a_terminal(process_env)
    term.send("n\n")
    code = term.finish()

    assert code == 0, term.text()
    assert f"Detached. The run keeps going: `dstack logs -f {name}`" in term.text()
    assert process_env.run_json(name)["status"] == "running"  # the local server survived too
    assert process_env.dstack("stop", "-x", name).code == 0
