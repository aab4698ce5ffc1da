"""`dstack ui [--remote [NAME]] [--no-browser]`: open the web UI, signed in.

The server (the local one, started if need be, or a remote) gives a one-time sign-in link
for this CLI's user; it is opened in the browser, or printed when there is none.
"""

from __future__ import annotations

import click

from dstack.cli.context import client_for, remote_option


@click.command()
@click.option("--no-browser", is_flag=True, help="Print the link instead of opening it.")
@remote_option
def ui(no_browser: bool, remote: str | None) -> None:
    """Open the server's web UI in the browser with a one-time sign-in link (good for a
    minute); print the link when no browser is available."""
    link = client_for(remote).ui_sign_in_url()
    opened = False
    if not no_browser:
        import webbrowser  # ~3 ms (shlex, shutil) only `dstack ui` needs

        try:
            opened = webbrowser.open(link, new=2)
        except webbrowser.Error:
            opened = False
    if opened:
        click.echo(f"Opened the web UI in your browser (if not, open {link} within a minute).")
    else:
        click.echo(f"Open this link within a minute to sign in to the web UI:\n  {link}")
