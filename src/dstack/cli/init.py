"""`dstack init [--token [TOKEN] | --ssh-key PATH | --no-credentials] [--git-remote NAME]
[--show | --remove] [--no-check] [--remote [NAME]]`

Tells a server how its runners clone this repository: the URL of its git remote (`origin`,
or the only remote) and a token or an SSH key, which the server keeps encrypted and never
shows again. Runs of a commit that was pushed to that remote are then cloned by the runners;
other runs upload the commit as a bundle, as without `dstack init`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dstack.cli.context import client_for, remote_option
from dstack.cli.render import ago
from dstack.errors import ConfigError, RepoError
from dstack.models.repo import CredentialKind
from dstack.repo.credentials import url_for_kind
from dstack.repo.git_remotes import choose_remote, list_remotes, same_repository
from dstack.repo.remote_urls import normalize_remote_url, repo_id_for, sanitize_remote_url
from dstack.repo.state import find_repo_root

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.repo import CredentialKind, RepoCredentials
    from dstack.repo.git_remotes import GitRemote


@click.command()
@click.option(
    "--token",
    "token",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[TOKEN]",
    help="Clone over HTTPS with this token (or USER:TOKEN); asked for when left out.",
)
@click.option(
    "--ssh-key",
    "ssh_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Clone over SSH with this private key file.",
)
@click.option("--no-credentials", is_flag=True, help="The repository is public: clone as is.")
@click.option("--git-remote", metavar="NAME", help="The git remote to clone (default: origin).")
@click.option("--show", is_flag=True, help="Only show what the server stores.")
@click.option("--remove", is_flag=True, help="Forget it: runs upload their code again.")
@click.option("--no-check", is_flag=True, help="Store without trying `git ls-remote` first.")
@remote_option
def init(
    token: str | None,
    ssh_key: Path | None,
    no_credentials: bool,
    git_remote: str | None,
    show: bool,
    remove: bool,
    no_check: bool,
    remote: str | None,
) -> None:
    """Let runners clone this repository (the secret is stored on the server, never shown)."""
    chosen = [flag for flag, on in _credential_flags(token, ssh_key, no_credentials) if on]
    if len(chosen) > 1 or (chosen and (show or remove)) or (show and remove):
        raise ConfigError(
            "give at most one of --token, --ssh-key, --no-credentials, --show, --remove"
        )
    repo_id, git = _repository(git_remote)
    if token is not None:
        _check_token_applies(git)
    client = client_for(remote)
    if show or remove:
        _show_or_remove(client, repo_id, remove=remove)
        return
    stored = client.get_repo_credentials(repo_id)
    if not chosen and stored is not None and _same(stored.url, git.url):
        _print_stored(stored, prefix="Nothing to change. ")
        return
    kind, secret = _credentials(token, ssh_key)
    _store(client, repo_id, git, kind, secret, check=not no_check)


def _credential_flags(
    token: str | None, ssh_key: Path | None, no_credentials: bool
) -> list[tuple[str, bool]]:
    return [
        ("--token", token is not None),
        ("--ssh-key", ssh_key is not None),
        ("--no-credentials", no_credentials),
    ]


def _repository(git_remote: str | None) -> tuple[str, GitRemote]:
    """The repository's id (as runs record it) and the git remote runners clone."""
    root = find_repo_root(Path.cwd())
    git = choose_remote(root, git_remote)
    if normalize_remote_url(git.url) is None:
        raise RepoError(
            f"git remote '{git.name}' is a folder on this machine "
            f"({sanitize_remote_url(git.url)}): runners cannot clone it",
            "push to a remote on a server runners reach, or keep using uploads",
        )
    origin = next((r.url for r in list_remotes(root) if r.name == "origin"), None)
    return repo_id_for(root, origin), git


def _check_token_applies(git: GitRemote) -> None:
    """A token is sent over HTTP(S) only: refused, before it is asked for, for a remote that
    git reaches another way (`git://`, which has no authentication at all)."""
    url = url_for_kind(git.url, CredentialKind.TOKEN)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("https", "http"):
        shown = sanitize_remote_url(git.url)
        raise ConfigError(
            f"git remote '{git.name}' is {shown}: a token only applies to an HTTPS remote",
            hint=f"`git remote set-url {git.name} https://...` first, or use --ssh-key PATH, "
            "or --no-credentials for a public repository",
        )


def _same(stored_url: str, git_url: str) -> bool:
    return same_repository(stored_url, git_url)


def _credentials(token: str | None, ssh_key: Path | None) -> tuple[CredentialKind, str | None]:
    if token is not None:
        value = token or click.prompt("Token", hide_input=True, err=True)
        value = str(value).strip()
        if not value:
            raise ConfigError("the token is empty", hint="give it with `--token TOKEN`")
        return CredentialKind.TOKEN, value
    if ssh_key is not None:
        try:
            key = ssh_key.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the SSH key '{ssh_key}': {exc}") from exc
        if "PRIVATE KEY" not in key:
            raise ConfigError(
                f"'{ssh_key}' is not an SSH private key",
                hint="give the private key file (e.g. ~/.ssh/id_ed25519), not the .pub one",
            )
        return CredentialKind.SSH_KEY, key
    return CredentialKind.NONE, None


def _store(
    client: Client,
    repo_id: str,
    git: GitRemote,
    kind: CredentialKind,
    secret: str | None,
    *,
    check: bool,
) -> None:
    url = url_for_kind(git.url, kind)
    answer = client.set_repo_credentials(repo_id, url, kind, secret, check=check)
    if answer.warning:
        click.echo(f"Warning: {answer.warning}", err=True)
    _print_stored(answer.credentials, prefix="Stored. ")


def _show_or_remove(client: Client, repo_id: str, *, remove: bool) -> None:
    if remove:
        client.delete_repo_credentials(repo_id)
        click.echo(f"Removed. Runs of {repo_id} upload their code to the server again.")
        return
    stored = client.get_repo_credentials(repo_id)
    if stored is None:
        click.echo(
            f"Nothing stored for {repo_id}: runs upload their code. "
            "Run `dstack init --token` (or `--ssh-key PATH`, `--no-credentials`) to clone."
        )
        return
    _print_stored(stored)


def _print_stored(stored: RepoCredentials, *, prefix: str = "") -> None:
    how = {"none": "no credentials", "token": "a token", "ssh-key": "an SSH key"}[stored.kind]
    hidden = "" if stored.kind == "none" else " (hidden)"
    click.echo(
        f"{prefix}Runners clone {stored.url} with {how}{hidden} for repository "
        f"{stored.repo_id}; set by {stored.created_by} {ago(stored.updated_at)}."
    )
    click.echo("Runs of pushed commits are cloned; other commits are uploaded as bundles.")
