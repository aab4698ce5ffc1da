from __future__ import annotations

from dstack.models.providers import ALIASES, PROVIDER_NAMES
from dstack.providers.registry import PROVIDERS, canonical_name


def test_the_names_config_knows_are_the_registrys() -> None:
    assert tuple(PROVIDERS) == PROVIDER_NAMES
    assert all(canonical_name(alias) == target for alias, target in ALIASES.items())
