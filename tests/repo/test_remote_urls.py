"""Remote URLs: one id per repository however it was cloned, and no stored credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.repo import normalize_remote_url, repo_id_for, sanitize_remote_url


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/models.git",
        "git@github.com:acme/models",
        "ssh://git@github.com/acme/models.git",
        "ssh://git@github.com:22/acme/models.git",
        "https://github.com/acme/models",
        "https://github.com/acme/models.git/",
        "https://user:token@GitHub.com/acme/models.git",
        "http://github.com/acme/models",
        "git://github.com/acme/models.git",
    ],
)
def test_every_spelling_of_a_remote_gives_one_id(url: str) -> None:
    assert normalize_remote_url(url) == "github.com/acme/models"


@pytest.mark.parametrize(
    "url", ["/srv/git/models.git", "../models", "file:///srv/git/models.git", "./x:y"]
)
def test_local_remotes_have_no_network_name(url: str) -> None:
    assert normalize_remote_url(url) is None


def test_local_remote_id_is_the_remote_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    remote = tmp_path / "shared.git"

    assert repo_id_for(a, str(remote)) == repo_id_for(b, f"file://{remote}")
    assert repo_id_for(a, str(remote)).startswith("local:")
    assert repo_id_for(a, None) != repo_id_for(b, None)


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://user:token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_abc@github.com/o/r", "https://github.com/o/r"),
        ("https://github.com:8443/o/r", "https://github.com:8443/o/r"),
        ("ssh://git:pw@host:2222/o/r", "ssh://git@host:2222/o/r"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
    ],
)
def test_credentials_are_not_recorded(url: str, safe: str) -> None:
    assert sanitize_remote_url(url) == safe
