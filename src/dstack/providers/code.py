"""`provider: code` — VS Code in the browser (openvscode-server)."""

from __future__ import annotations

from dstack.models.workflow import WorkflowSpec
from dstack.providers.app import AppProvider, Launch
from dstack.providers.base import JobContext

OPENVSCODE_VERSION = "1.86.2"
_HOME = f"$HOME/.dstack/openvscode-server-v{OPENVSCODE_VERSION}"
_URL = (
    "https://github.com/gitpod-io/openvscode-server/releases/download/"
    f"openvscode-server-v{OPENVSCODE_VERSION}/openvscode-server-v{OPENVSCODE_VERSION}-linux-$ARCH"
    ".tar.gz"
)
# openvscode-server is not a pip package; fetched with Python because slim images have no curl
_INSTALL = (
    f'test -x "{_HOME}/bin/openvscode-server" || ('
    "ARCH=$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/') && "
    'mkdir -p "$HOME/.dstack" && cd "$HOME/.dstack" && '
    'python -c "import io, sys, tarfile, urllib.request as r; '
    'tarfile.open(fileobj=io.BytesIO(r.urlopen(sys.argv[1]).read())).extractall()" '
    f'"{_URL}" && mv "openvscode-server-v{OPENVSCODE_VERSION}-linux-$ARCH" "{_HOME}")'
)


class CodeProvider(AppProvider):
    """The connection token is both on the server and in the URL (`?tkn=`)."""

    name = "code"
    summary = "Open VS Code in the browser."
    needs_token = True

    def install_commands(self) -> list[str]:
        return [_INSTALL]

    def launch(self, workflow: WorkflowSpec, ctx: JobContext, port: str, token: str) -> Launch:
        command = (
            f'"{_HOME}/bin/openvscode-server" --host 0.0.0.0 --port "{port}"'
            ' --connection-token "$DSTACK_CODE_TOKEN" --default-folder "$PWD"'
        )
        return Launch(command=command, env={"DSTACK_CODE_TOKEN": token}, url_query={"tkn": token})
