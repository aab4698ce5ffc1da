"""Port tunnels: a job's app port on a runner, reachable as a local port on the user's machine.

Raw TCP bytes travel over WebSockets (binary frames) through the server, so a runner behind
NAT only ever dials out: `agent` (runner side) keeps a control connection and opens one data
connection per forwarded TCP connection, `hub` (server side) pairs them with the user's
connection, `client` (`PortForwards`) listens on local ports for the CLI. `wire` is the
protocol all three speak.
"""
