"""Plugin discovery and enabling.

Every plugin, the always-on GraphQL API included, is found through the ``rapport.plugins``
entry points of installed distributions: one path for built-ins and partners alike.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from core import builtin, hookspecs
from core.config import ConfigError, Settings

ENTRY_POINT_GROUP = "rapport.plugins"
ALWAYS_ENABLED = frozenset({"api"})
DISTRIBUTION = "rapport-crm"
log = logging.getLogger("rapport.plugins")


@dataclass
class PluginInfo:
    name: str
    version: str
    enabled: bool
    reason: str | None = None  # why it is not enabled
    install_hint: str | None = None
    hooks: list[str] = field(default_factory=list)


def _missing_extra(ep: metadata.EntryPoint) -> str | None:
    """A distribution the entry point's extras require that is not installed. Plugins
    import heavy dependencies (numpy...) on first use, so importing them proves nothing."""
    if not ep.extras or ep.dist is None:
        return None
    for requirement in getattr(ep.dist, "requires", None) or []:
        name, _, marker = requirement.partition(";")
        if not any(f'extra == "{extra}"' in marker for extra in ep.extras):
            continue
        project = re.split(r"[\s\[<>=!~;(]", name.strip(), maxsplit=1)[0]
        try:
            metadata.distribution(project)
        except metadata.PackageNotFoundError:
            return project
    return None


def _load(ep: metadata.EntryPoint) -> tuple[Any | None, str | None, str | None]:
    """Import an entry point; on missing dependencies say what to install."""
    dist = ep.dist.name if ep.dist else "rapport-crm"
    hint = f'pip install "{dist}[{",".join(ep.extras) or ep.name}]"'
    missing: str | None = _missing_extra(ep)
    if missing is None:
        try:
            return ep.load(), None, None
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
    return None, f"missing dependency {missing!r}", hint


def _may_implement(ep: metadata.EntryPoint, hook: str) -> bool:
    """False when the entry point's module surely does not implement ``hook``: its source
    (found with ``find_spec``, not imported) never names it and imports nothing with ``*``.
    True when in doubt (no source file, a module that cannot be found)."""
    module = ep.value.partition(":")[0].split("[")[0].strip()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return True
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return True
    try:
        with open(origin, encoding="utf-8") as source_file:
            source = source_file.read()
    except (OSError, UnicodeDecodeError):
        return True
    return hook in source or "import *" in source


def _entry_points() -> list[metadata.EntryPoint]:
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda e: e.name)


def build_plugin_manager(settings: Settings, extra: Iterable[object] = (),
                         only_implementing: str | None = None
                         ) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """Make the app's plugin manager: core built-ins, enabled entry points, then ``extra``.

    ``extra`` are plugin objects registered directly (tests, embedding applications).
    ``only_implementing``: a hook name; plugins whose entry module does not mention it are
    not imported (``rapport --help`` asks for ``rapport_cli_commands`` only).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="core")

    wanted = None if settings.plugins is None else set(settings.plugins)
    infos: list[PluginInfo] = []
    available: set[str] = set()
    for ep in _entry_points():
        version = ep.dist.version if ep.dist else "?"
        selected = ep.name in ALWAYS_ENABLED or wanted is None or ep.name in wanted
        if not selected:
            infos.append(PluginInfo(ep.name, version, False, "not listed in RAPPORT_PLUGINS"))
            available.add(ep.name)
            continue
        if only_implementing is not None and not _may_implement(ep, only_implementing):
            infos.append(PluginInfo(ep.name, version, False,
                                    f"not imported: it does not implement {only_implementing}"))
            available.add(ep.name)
            continue
        plugin, reason, hint = _load(ep)
        available.add(ep.name)
        if plugin is None:
            if wanted is not None and ep.name in wanted:
                raise ConfigError(f"plugin {ep.name!r} is enabled but unavailable ({reason}); "
                                  f"install it with: {hint}")
            log.warning("plugin %s unavailable (%s); install it with: %s", ep.name, reason, hint)
            infos.append(PluginInfo(ep.name, version, False, reason, hint))
            continue
        pm.register(plugin, name=ep.name)
        infos.append(PluginInfo(ep.name, version, True))

    if wanted is not None:
        unknown = sorted(wanted - available)
        if unknown:
            raise ConfigError(
                f"RAPPORT_PLUGINS names {', '.join(unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not installed; installed: "
                f"{', '.join(sorted(available)) or 'none'}")

    for plugin in extra:
        name = getattr(plugin, "__name__", None) or getattr(
            plugin, "name", None) or type(plugin).__name__
        pm.register(plugin, name=str(name))
        infos.append(PluginInfo(str(name), str(getattr(plugin, "__version__", "local")), True))

    pm.hook.rapport_add_hookspecs(plugin_manager=pm)
    if only_implementing is None:  # with plugins left out, another's hookspecs may be absent
        pm.check_pending()

    if settings.trace_plugins:
        pm.trace.root.setwriter(lambda message: log.info(message.rstrip()))
        pm.enable_tracing()

    for info in infos:
        plugin = pm.get_plugin(info.name) if info.enabled else None
        if plugin is not None:
            info.hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
    return pm, infos


def builtin_plugin_names() -> list[str]:
    """Plugins shipped in the rapport-crm distribution itself (the API excluded)."""
    return sorted(ep.name for ep in _entry_points()
                  if ep.dist is not None and ep.dist.name == DISTRIBUTION
                  and ep.name not in ALWAYS_ENABLED)


def enabled_plugin_names(pm: pluggy.PluginManager) -> set[str]:
    return {name for name, _ in pm.list_name_plugin() if name != "core"}


def call_each(caller: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation of a hook; return ``(plugin name, result)`` per non-None.

    For hooks whose results are shown per plugin (erasure report, export sections).
    Implementations run in the same order as a normal hook call.
    """
    results: list[tuple[str, Any]] = []
    for impl in reversed(caller.get_hookimpls()):
        result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        if result is not None:
            results.append((impl.plugin_name, result))
    return results

