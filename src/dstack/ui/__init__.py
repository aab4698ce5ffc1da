"""The web UI: server-rendered pages on the server's own services, at `/`.

`router` (in `dstack.ui.routes`) is mounted by the server app. Pages and the UI's endpoints
authenticate with a server-side session (`dstack.ui.sessions`), never with a bearer token,
and judge the session's user exactly as the API judges that user's token.
"""
