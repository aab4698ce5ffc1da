"""Providers from installed packages: the entry-point group `dstack.providers`.

A package declares, in its `pyproject.toml`:

    [project.entry-points."dstack.providers"]
    hello = "dstack_provider_hello:HelloProvider"

The value is a `Provider` subclass (instantiated without arguments) or a `Provider` instance;
its `name` must be the entry point's name. Nothing here runs at import: the installed
packages are scanned the first time a name is not a built-in one (CLI start-up time), and a
plugin is imported only when its name is asked for. A built-in name always wins: a plugin
with that name is ignored, with a warning naming its package.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dstack.config.normalize import warn
from dstack.errors import ConfigError
from dstack.providers.base import Provider

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

GROUP = "dstack.providers"
_MAX_ERROR = 200


@dataclass(frozen=True)
class Plugin:
    """One provider an installed package declares: where it comes from, not yet imported."""

    name: str
    target: str  # `module:attribute`
    package: str  # `dstack-provider-hello 0.1.0`
    entry_point: EntryPoint = field(compare=False, repr=False)


def _package(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return f"the package of {entry_point.value}"
    return f"{dist.name} {dist.version}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message if len(message) <= _MAX_ERROR else message[: _MAX_ERROR - 3] + "..."


class PluginProviders:
    """The plugins of the installed packages: found once, each imported once when used."""

    def __init__(self, builtin: Collection[str]) -> None:
        self._builtin = set(builtin)
        self._found: dict[str, Plugin] | None = None
        self._loaded: dict[str, Provider] = {}

    def found(self) -> dict[str, Plugin]:
        """Every plugin by name (not imported); scans the installed packages the first time."""
        if self._found is None:
            self._found = self._scan()
        return self._found

    def _scan(self) -> dict[str, Plugin]:
        # importlib.metadata: ~15 ms that a run of a built-in provider or workflow never needs
        from importlib.metadata import entry_points

        found: dict[str, Plugin] = {}
        points = sorted(entry_points(group=GROUP), key=lambda p: (p.name, _package(p)))
        for point in points:
            plugin = Plugin(point.name.lower(), point.value, _package(point), point)
            if plugin.name in self._builtin:
                warn(
                    f"provider '{plugin.name}' of package {plugin.package} is ignored:"
                    f" '{plugin.name}' is a built-in provider"
                )
            elif plugin.name in found:
                warn(
                    f"provider '{plugin.name}' of package {plugin.package} is ignored:"
                    f" package {found[plugin.name].package} has one of that name"
                )
            else:
                found[plugin.name] = plugin
        return found

    def get(self, name: str) -> Provider | None:
        """The provider plugin `name`, imported; None when no package declares it.

        Raises `ConfigError` naming the package when it cannot be imported or is not a
        provider: one line, never the plugin's traceback."""
        if name in self._loaded:
            return self._loaded[name]
        plugin = self.found().get(name)
        if plugin is None:
            return None
        provider = _load(plugin)
        self._loaded[name] = provider
        return provider


def _load(plugin: Plugin) -> Provider:
    def failed(problem: str) -> ConfigError:
        dist = plugin.package.rsplit(" ", 1)[0]
        return ConfigError(
            f"provider '{plugin.name}' of package {plugin.package} failed to load"
            f" ({plugin.target}): {problem}",
            hint=f"fix the package, or uninstall it: pip uninstall {dist}",
        )

    try:
        value = plugin.entry_point.load()
        if isinstance(value, type) and issubclass(value, Provider):
            value = value()
    except (Exception, SystemExit) as exc:
        raise failed(_one_line(exc)) from None
    if not isinstance(value, Provider):
        raise failed(f"{type(value).__name__} is not a dstack.providers.base.Provider (subclass)")
    if getattr(value, "name", None) != plugin.name:
        raise failed(f"its name is {getattr(value, 'name', None)!r}, not '{plugin.name}'")
    return value


def plugin_failure(plugin_name: str, package: str, exc: Exception) -> ConfigError:
    """A plugin's `job_specs` raised something else than a `ConfigError`: one line."""
    return ConfigError(
        f"provider '{plugin_name}' of package {package} failed: {_one_line(exc)}",
        hint="this is a problem of that package; report it to its authors",
    )
