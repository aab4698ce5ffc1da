"""A boot harness for instances created in moto's EC2: what a cloud does after `run_instances`.

`BootHarness` watches EC2 for running instances that carry the given tags, and "boots" each
one on loopback: its user-data script runs under `bash` as its own process group, in its
own work dir (`<root>/<instance id>/`, `DSTACK_HOME` below it), with the environment the test
gives (a PATH where dstack is installed), next to a fake instance metadata service of its own
(`MetadataServer`) whose base URL the script gets in `DSTACK_RUNNER_METADATA_URL`. When EC2
says the instance is terminated (or stopping), the harness kills its process group. Leaving
the `with` block kills every script and stops every metadata server.

    with BootHarness(moto.endpoint, env=env, tags={"dstack-server": sid}, root=tmp) as boot:
        ...                               # the server creates an instance
        (instance,) = boot.wait_for(1)
        boot.interrupt(instance.instance_id)  # the spot notice appears in its metadata
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

METADATA_URL_ENV = "DSTACK_RUNNER_METADATA_URL"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
BOOTED_STATES = {"running"}
GONE_STATES = {"shutting-down", "terminated", "stopping", "stopped"}


class MetadataServer:
    """The instance metadata service (IMDS) of one instance, on a loopback port.

    `PUT /latest/api/token` (IMDSv2; needs the TTL header) gives a token; every GET needs one
    (401 otherwise), as on an instance created with `HttpTokens=required`. It answers
    `/latest/meta-data/instance-id`, `.../instance-type`, and
    `.../spot/instance-action`: 404 until `interrupt()`, then 200 with
    `{"action": "terminate", "time": "<two minutes later>"}` as EC2 gives it.
    `requests` lists the paths asked, in order.
    """

    def __init__(self, instance_id: str, instance_type: str = "t3.micro") -> None:
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.requests: list[str] = []
        self._tokens: set[str] = set()
        self._action: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def interrupt(self, when: datetime | None = None) -> None:
        """Post a spot interruption notice (terminate at `when`, default in two minutes)."""
        at = when or datetime.now(UTC) + timedelta(minutes=2)
        with self._lock:
            self._action = {"action": "terminate", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    # --- what the handler asks ----------------------------------------------------------

    def new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and token in self._tokens

    def answer(self, path: str) -> tuple[int, str]:
        with self._lock:
            self.requests.append(path)
            action = self._action
        if path == "/latest/meta-data/instance-id":
            return 200, self.instance_id
        if path == "/latest/meta-data/instance-type":
            return 200, self.instance_type
        if path == "/latest/meta-data/spot/instance-action" and action is not None:
            return 200, json.dumps(action)
        return 404, "Not Found"


def _handler(imds: MetadataServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            ttl = self.headers.get(TOKEN_TTL_HEADER, "")
            if self.path != "/latest/api/token" or not ttl.isdigit() or not 0 < int(ttl) <= 21600:
                self._send(400, "Bad Request")
            else:
                self._send(200, imds.new_token())

        def do_GET(self) -> None:
            if not imds.valid(self.headers.get(TOKEN_HEADER)):
                self._send(401, "Unauthorized")
            else:
                self._send(*imds.answer(self.path))

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test's output is the script's log

    return Handler


@dataclass
class BootedInstance:
    """One instance the harness booted: its script's process (group), dirs and metadata."""

    instance_id: str
    workdir: Path  # the script's cwd; its output is in `log`
    home: Path  # DSTACK_HOME
    log: Path
    user_data: str
    metadata: MetadataServer
    process: subprocess.Popen[bytes]
    killed: bool = field(default=False)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class BootHarness:
    """Boots the instances in EC2 (moto) that carry all of `tags` (any, when empty).

    `ec2` is a boto3 EC2 client, or an endpoint URL (a client is made for `region` with
    moto's fake keys, and closed at the end). `env` is the scripts' base environment
    (default: this process's); each script also gets `DSTACK_HOME` and
    `DSTACK_RUNNER_METADATA_URL`. Polling runs in a thread every `interval` seconds while
    the harness is entered; `poll()` does one round by hand. Errors of a round are kept in
    `errors` (a test asserts it is empty) rather than lost in the thread.

    `hold()` keeps new instances from booting (a slow boot: they stay `running` in EC2 with
    no runner) until `release()`; killing what EC2 terminates goes on meanwhile.
    """

    def __init__(
        self,
        ec2: Any,
        *,
        root: Path,
        env: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        interval: float = 0.2,
    ) -> None:
        self._owns_client = isinstance(ec2, str)
        self.ec2 = _client(ec2, region) if isinstance(ec2, str) else ec2
        self.root = root
        self.env = dict(os.environ if env is None else env)
        self.tags = dict(tags or {})
        self.interval = interval
        self.instances: dict[str, BootedInstance] = {}
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._booting = threading.Event()
        self._booting.set()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BootHarness:
        self._thread = threading.Thread(target=self._watch, name="boot-harness", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what a test uses ------------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 60) -> list[BootedInstance]:
        """The first `count` booted instances (in boot order), once there are that many."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                booted = list(self.instances.values())
            if len(booted) >= count:
                return booted[:count]
            time.sleep(0.05)
        raise TimeoutError(f"{len(booted)} of {count} instances booted in {timeout} s")

    def interrupt(self, instance_id: str, when: datetime | None = None) -> None:
        """Post a spot interruption notice in the instance's metadata. EC2 (moto) is not
        told: the test terminates the instance there itself if it wants the cloud's half."""
        with self._lock:
            self.instances[instance_id].metadata.interrupt(when)

    def hold(self) -> None:
        """Boot nothing new until `release()` (instances created meanwhile wait)."""
        self._booting.clear()

    def release(self) -> None:
        """Boot again, the instances held back included (those still running in EC2)."""
        self._booting.set()

    def poll(self) -> None:
        """One round: boot what is new and running (unless held), kill what EC2 says is
        gone."""
        for raw in self._described():
            state = raw["State"]["Name"]
            known = self.instances.get(raw["InstanceId"])
            if known is None and state in BOOTED_STATES and self._booting.is_set():
                self._boot(raw)
            elif known is not None and state in GONE_STATES and not known.killed:
                _kill(known)

    def close(self) -> None:
        """Stop watching, kill every script's process group, stop every metadata server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            booted = list(self.instances.values())
        for instance in booted:
            _kill(instance)
            instance.metadata.close()
        if self._owns_client:
            self.ec2.close()

    # --- inside ------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # kept for the test to see; the watch goes on
                self.errors.append(exc)
            self._stop.wait(self.interval)

    def _described(self) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _boot(self, raw: dict[str, Any]) -> None:
        instance_id = raw["InstanceId"]
        user_data = self._user_data(instance_id)
        workdir = self.root / instance_id
        home = workdir / "dstack-home"
        home.mkdir(parents=True)
        script = workdir / "user-data.sh"
        script.write_text(user_data)
        metadata = MetadataServer(instance_id, raw.get("InstanceType", "t3.micro"))
        env = {**self.env, "DSTACK_HOME": str(home), METADATA_URL_ENV: metadata.url}
        log = workdir / "boot.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", str(script)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        booted = BootedInstance(instance_id, workdir, home, log, user_data, metadata, process)
        with self._lock:
            self.instances[instance_id] = booted

    def _user_data(self, instance_id: str) -> str:
        reply = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = reply.get("UserData", {}).get("Value", "")
        return base64.b64decode(value).decode() if value else ""


def _kill(instance: BootedInstance, grace: float = 5) -> None:
    """SIGTERM the script's process group, SIGKILL what is left after `grace` seconds."""
    instance.killed = True
    pgid = instance.process.pid  # start_new_session: the group is the script's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            instance.process.poll()  # reap the leader so it does not linger as a zombie
            time.sleep(0.05)
        if not _group_alive(pgid):
            break
    instance.process.wait(10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _client(endpoint: str, region: str) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    ).client("ec2", endpoint_url=endpoint)
