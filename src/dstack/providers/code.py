"""`provider: code` — VS Code in the browser (openvscode-server)."""

from __future__ import annotations

import shlex

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import APP_HOST, AppProvider, Launch
from dstack.providers.base import SubmissionContext

OPENVSCODE_VERSION = "1.86.2"
_NAME = f"openvscode-server-v{OPENVSCODE_VERSION}"
_HOME = f"$HOME/.dstack/{_NAME}"
RELEASE_URL = (
    "https://github.com/gitpod-io/openvscode-server/releases/download/"
    f"{_NAME}/{_NAME}-linux-$ARCH.tar.gz"
)
"""Where the job downloads openvscode-server from; `$ARCH` is `x64` or `arm64`."""
_TOKEN_FILE = "$HOME/.dstack/code-token"

# openvscode-server is not a pip package. Python fetches it (slim images have no curl) and says
# in one line why it could not, instead of a traceback; `tar` unpacks it with its modes intact.
_FETCH = """
import shutil, sys, urllib.request
url, target = sys.argv[1:]
try:
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out)
except OSError as exc:
    sys.exit(f"cannot download openvscode-server from {url}: {exc}")
"""
_INSTALL = (
    f'test -x "{_HOME}/bin/openvscode-server" || ('
    "ARCH=$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/') && "
    'mkdir -p "$HOME/.dstack" && cd "$HOME/.dstack" && '
    f'python -c {shlex.quote(_FETCH)} "{RELEASE_URL}" {_NAME}.tar.gz && '
    f'tar -xzf {_NAME}.tar.gz && rm {_NAME}.tar.gz && mv "{_NAME}-linux-$ARCH" "{_HOME}")'
)


class CodeProvider(AppProvider):
    """The connection token is in the URL (`?tkn=`, which the server swaps for a cookie) and
    reaches the server through a file only the job can read, not on its command line, which
    every user of the machine sees in `ps`."""

    name = "code"
    reads = frozenset()
    summary = "Open VS Code in the browser."
    needs_token = True

    def install_commands(self) -> list[str]:
        return [_INSTALL]

    def launch(
        self, workflow: WorkflowSpec, ctx: SubmissionContext, port: str, token: str
    ) -> Launch:
        command = (
            f'(umask 077 && printf %s "$DSTACK_CODE_TOKEN" > "{_TOKEN_FILE}") && '
            f'"{_HOME}/bin/openvscode-server" --host {APP_HOST} --port "{port}"'
            f' --connection-token-file "{_TOKEN_FILE}" --default-folder "$PWD"'
        )
        return Launch(command=command, env={"DSTACK_CODE_TOKEN": token}, url_query={"tkn": token})
