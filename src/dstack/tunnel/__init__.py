"""Port tunnels: a job's app port on a runner, reachable as a local port on the user's machine.

Raw TCP bytes travel over WebSockets (binary frames) through the server, so a runner behind
NAT only ever dials out. This package is the protocol only, importing nothing of the server,
the runner or the CLI: `wire` (the messages all sides speak), `pipe` (a TCP stream over a
WebSocket), `relay` (one WebSocket to another), `hub` (`TunnelHub`, which pairs a runner's
data connections with users' connections), `client` (`PortForwards`, local ports for the CLI).
The halves that need more live with what they serve: the runner's agent and its port list in
`dstack.runner.tunnel` and `dstack.runner.ports`, the server's access checks in
`dstack.server.services.tunnel` and its endpoints in `dstack.server.routers.tunnel`.
"""
