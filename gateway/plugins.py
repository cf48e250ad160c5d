"""Loading provider adapters from the ``reelgate.providers`` entry-point group.

This is the only place that knows how adapters are found. A plugin that fails to
import, or is not a ``Provider``, is reported with its error (``reelgate providers``
shows it) and never crashes the gateway or silently disappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stevedore import ExtensionManager

from gateway.provider import Provider

NAMESPACE = "reelgate.providers"


@dataclass(frozen=True)
class PluginSet:
    providers: dict[str, type[Provider]] = field(default_factory=dict)
    #: entry-point name -> why it could not be loaded
    failures: dict[str, str] = field(default_factory=dict)


def discover(namespace: str = NAMESPACE) -> PluginSet:
    failures: dict[str, str] = {}

    def on_failure(_manager: object, entrypoint: object, exc: BaseException) -> None:
        name = getattr(entrypoint, "name", str(entrypoint))
        failures[name] = f"{type(exc).__name__}: {exc}"

    manager: ExtensionManager[object] = ExtensionManager(
        namespace, invoke_on_load=False, on_load_failure_callback=on_failure
    )
    providers: dict[str, type[Provider]] = {}
    for ext in manager.extensions:
        cls = ext.plugin
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            failures[ext.name] = f"{ext.entry_point.value} is not a reelgate Provider subclass"
        elif getattr(cls, "name", None) != ext.name:
            failures[ext.name] = f"{cls.__name__}.name is {getattr(cls, 'name', None)!r}, expected {ext.name!r}"
        elif getattr(cls, "__abstractmethods__", None):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            failures[ext.name] = f"{cls.__name__} does not implement: {missing}"
        else:
            providers[ext.name] = cls
    return PluginSet(dict(sorted(providers.items())), failures)
