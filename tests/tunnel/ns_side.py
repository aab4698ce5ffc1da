"""The runner's side of the namespace test, run inside the namespace:
`python ns_side.py SERVER_URL RUNNER_TOKEN RUNNER_ID`.

Starts an echo app on the namespace's 127.0.0.1 and a `TunnelAgent` that may dial only it;
prints the app's port, then "connected" once the agent reached the server; runs until
killed or until stdin closes.
"""

from __future__ import annotations

import socket
import sys
import threading


def echo_forever(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> None:
    from dstack.runner.tunnel import TunnelAgent

    url, token, runner_id = sys.argv[1:4]
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=echo_forever, args=(server,), daemon=True).start()
    print(port, flush=True)
    agent = TunnelAgent(url, token, runner_id, allowed=lambda job_id, p: p == port).start()
    print("connected" if agent.wait_connected(30) else "not connected", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
    agent.close()


if __name__ == "__main__":
    main()
