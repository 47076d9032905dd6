"""The plugin manager: discovers plugins, isolates broken ones, and fills the registries.

Plugins come from the entry-point group ``tunery`` (the entry point's name is the plugin's
name) or are passed in directly. Each plugin is loaded, registered and asked for its members
inside its own guard: a plugin that fails is recorded with its reason and removed, and every
other plugin keeps working. Environment switches (read from the mapping given to the host):

* ``TUNERY_PLUGINS=a,b`` -- load only these entry points;
* ``TUNERY_DISABLE_PLUGINS=a,b`` -- never load these;
* ``TUNERY_DISABLE_AUTOLOAD=1`` -- load no entry point at all (only plugins passed in);
* ``TUNERY_STRICT_PLUGINS=1`` -- a failing plugin is fatal (:class:`~tunery.errors.PluginError`).

Every hook is called the pluggy way (plugins registered later are asked first; ``tryfirst``,
``trylast`` and ``wrapper=True`` are honoured), with each implementation guarded: one that
raises is reported with its plugin's name (and listed by ``tunery plugins``), and the call goes
on with the others -- for a ``firstresult`` hook such as ``tunery_resolve_model``, the next
plugin is asked.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import traceback
import warnings
from typing import Any, Iterable, Mapping

import pluggy

from . import hookspecs
from .entrypoints import entry_points, known_hooks, remember_hooks
from .errors import PluginError
from .members import FAMILIES
from .registry import Registry

log = logging.getLogger("tunery.plugins")

ENTRY_POINT_GROUP = "tunery"
REGISTRATION_HOOKS = {family: f"tunery_register_{family}" for family in FAMILIES}


class PluginWarning(UserWarning):
    """Warned when a plugin fails to load and is skipped."""


@dataclasses.dataclass
class PluginInfo:
    """What ``tunery plugins`` shows for one plugin."""

    name: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"
    members: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {f: [] for f in FAMILIES})
    hooks: list[str] = dataclasses.field(default_factory=list)
    error: str = ""  # the traceback of a failure, for --debug
    problems: list[str] = dataclasses.field(default_factory=list)  # failures at call time, name conflicts

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "members": self.members,
            "hooks": self.hooks,
            "problems": self.problems,
        }


def _env_list(env: Mapping[str, str], key: str) -> set[str] | None:
    value = env.get(key)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _failure_status(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"unavailable: missing dependency {exc.name.split('.')[0]}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"failed: {type(exc).__name__}{': ' + text if text else ''}"


class PluginHost:
    """A pluggy manager plus the four registries and a record of every plugin."""

    def __init__(self, env: Mapping[str, str], autoload: bool = True, plugins: Iterable[Any] = (),
                 cache_dir: Any = None, only_hooks: Iterable[str] | None = None):
        self.pm = pluggy.PluginManager("tunery")
        self.pm.add_hookspecs(hookspecs)
        self.unavailable: dict[str, str] = {}  # plugin name -> why it is not loaded (for messages)
        self.registries: dict[str, Registry] = {family: Registry(family, self.unavailable) for family in FAMILIES}
        self.infos: dict[str, PluginInfo] = {}
        self.strict = _truthy(env.get("TUNERY_STRICT_PLUGINS"))
        self.cache_dir = cache_dir  # where the entry-point list is remembered (None: scan every time)
        autoload = autoload and not _truthy(env.get("TUNERY_DISABLE_AUTOLOAD"))
        if autoload:
            self._load_entry_points(_env_list(env, "TUNERY_PLUGINS"), _env_list(env, "TUNERY_DISABLE_PLUGINS") or set(),
                                    None if only_hooks is None else set(only_hooks))
        for plugin in plugins:
            self.add(plugin)
        if not autoload:
            self._add_essentials()

    @property
    def hook(self):
        return self.pm.hook

    # ------------------------------------------------------------------ loading

    def _load_entry_points(self, allow: set[str] | None, block: set[str], only_hooks: set[str] | None) -> None:
        """Load the installed plugins; with ``only_hooks``, skip those known (from the last full
        load) to implement none of these hooks -- ``tunery --help`` needs only the command plugins."""
        points = sorted(entry_points(ENTRY_POINT_GROUP, self.cache_dir), key=lambda e: e.name)
        known = known_hooks(points, self.cache_dir) if only_hooks is not None else {}
        loaded = {}
        by_name: dict[str, list] = {}
        for ep in points:
            by_name.setdefault(ep.name, []).append(ep)
        for name, same in by_name.items():
            ep = same[0]
            if name in known and not only_hooks & set(known[name]):
                continue
            info = PluginInfo(ep.name, ep.distribution, ep.version)
            if ep.name in block or (allow is not None and ep.name not in allow):
                info.status = "disabled"
                self.infos.setdefault(ep.name, info)
                self.unavailable[ep.name] = "is disabled (TUNERY_PLUGINS / TUNERY_DISABLE_PLUGINS)"
                continue
            if len({e.distribution for e in same}) > 1:  # never chosen by install order
                dists = " and ".join(f"'{e.distribution}'" for e in same)
                self._fail(info, PluginError(f"plugin name '{name}' is provided by distributions {dists}; "
                                             "uninstall one of them"))
                continue
            try:
                obj = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - any failure of a plugin is isolated
                self._fail(info, exc)
                continue
            self._register(obj, info)
            if not info.status.startswith("failed"):
                loaded[name] = (ep, obj, info.hooks)
        remember_hooks(loaded, self.cache_dir)

    def add(self, plugin: Any, name: str | None = None, distribution: str = "", version: str = "") -> PluginInfo:
        """Register a plugin object (a module, class or instance with hook implementations)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self.infos and self.infos[name].status != "disabled":
            raise PluginError(f"a plugin named '{name}' is already registered")
        if self.pm.is_registered(plugin):
            raise PluginError(f"plugin object {name!r} is already registered as plugin "
                              f"'{self.pm.get_name(plugin)}' (an installed entry point); pass it only once, "
                              "or use Engine(autoload=False, plugins=[...])")
        return self._register(plugin, PluginInfo(name, distribution, version))

    def _register(self, obj: Any, info: PluginInfo) -> PluginInfo:
        self.infos[info.name] = info
        try:
            self.pm.register(obj, name=info.name)
            callers = self.pm.get_hookcallers(obj) or []
            unknown = [c.name for c in callers if not c.has_spec()]
            if unknown:
                raise PluginError(
                    f"unknown hook {', '.join(unknown)} (valid hooks: see tunery.hookspecs; "
                    f"closest: {', '.join(self._closest_hook(u) for u in unknown)})"
                )
            info.hooks = sorted(c.name for c in callers)
            for family, hook_name in REGISTRATION_HOOKS.items():
                registry = self.registries[family]
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is obj:
                        impl.function(registry.bound(info.name, info.distribution))
                info.members[family] = registry.by_plugin(info.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of a plugin is isolated
            for registry in self.registries.values():
                registry.remove_plugin(info.name)
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            self._fail(info, exc)
            return info
        for caller in callers:
            if caller.name not in REGISTRATION_HOOKS.values():
                for impl in caller.get_hookimpls():
                    if impl.plugin is obj:
                        impl.function = self._guarded(impl, caller.name, info)
        self._note_conflicts()
        missing = self._missing_requirements(info)
        if missing:
            info.status = f"unavailable: missing dependency {missing}"
        return info

    def _note_conflicts(self) -> None:
        """Record on each plugin the member names it shares with another plugin."""
        for info in self.infos.values():
            info.problems[:] = [p for p in info.problems if not p.startswith("conflict: ")]
        for registry in self.registries.values():
            for name in registry.names_in_conflict():
                for plugin in registry.providers(name):
                    if plugin in self.infos:
                        self.infos[plugin].problems.append(f"conflict: {registry.conflict(name)}")

    def _guarded(self, impl: Any, hook: str, info: PluginInfo) -> Any:
        """``impl.function``, isolated: an exception is reported (fatal in strict mode) and the
        call goes on as if this implementation had returned ``None`` (or, for a wrapper, had
        passed the result through)."""
        function = impl.function

        def fail(exc: BaseException) -> None:
            message = f"plugin '{info.name}' failed in {hook}: {type(exc).__name__}: {exc}"
            if self.strict:
                raise PluginError(message + " (TUNERY_STRICT_PLUGINS is set)") from exc
            problem = f"failed in {hook}: {type(exc).__name__}: {exc}"
            if problem not in info.problems:
                info.problems.append(problem)
                info.error = "".join(traceback.format_exception(exc))
            log.warning(message)

        if not (impl.wrapper or impl.hookwrapper):
            def guarded(*args):
                try:
                    return function(*args)
                except Exception as exc:  # noqa: BLE001 - one plugin must not break the call
                    fail(exc)
                    return None

            return guarded

        def guarded_wrapper(*args):
            try:
                generator = function(*args)
                next(generator)
            except Exception as exc:  # noqa: BLE001
                fail(exc)
                return (yield)
            try:
                inner = yield
            except BaseException as exc:  # the inner implementations raised: the wrapper sees it
                try:
                    generator.throw(exc)
                except StopIteration as stop:
                    return stop.value
                raise
            try:
                generator.send(inner)
            except StopIteration as stop:
                return stop.value
            except Exception as exc:  # noqa: BLE001
                fail(exc)
            return inner

        return guarded_wrapper

    def _add_essentials(self) -> None:
        """Without autoload: tunery's own model sources, quantizer ``none`` and objective ``sft``,
        each unless the plugins given already provide that part."""
        needed = {
            "models": not self.pm.hook.tunery_resolve_model.get_hookimpls(),
            "none": "none" not in self.registries["quantizers"],
            "sft": not any(o.default for o in self.registries["objectives"]),
        }
        for ep in entry_points(ENTRY_POINT_GROUP, self.cache_dir):
            if ep.distribution == "tunery" and needed.get(ep.name) and ep.name not in self.infos:
                self._register(ep.load(), PluginInfo(ep.name, ep.distribution, ep.version))

    def _closest_hook(self, name: str) -> str:
        import difflib

        names = [n for n in dir(hookspecs) if n.startswith("tunery_")]
        match = difflib.get_close_matches(name, names, n=1)
        return match[0] if match else "?"

    def _missing_requirements(self, info: PluginInfo) -> str | None:
        for registry in self.registries.values():
            for member in registry.members_of(info.name):
                for module in member.requires:
                    if importlib.util.find_spec(module) is None:
                        return module
        return None

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.status = _failure_status(exc)
        info.error = "".join(traceback.format_exception(exc))
        self.infos[info.name] = info
        self.unavailable[info.name] = ("failed to load: " + info.status.removeprefix("failed: ")
                                       if info.status.startswith("failed") else f"is {info.status}")
        message = f"plugin '{info.name}' ({info.distribution or 'no distribution'}) was skipped: {info.status}"
        if self.strict:
            raise PluginError(message + " (TUNERY_STRICT_PLUGINS is set)") from exc
        log.warning(message)
        warnings.warn(message, PluginWarning, stacklevel=2)

    # ------------------------------------------------------------------ queries

    def plugin_of(self, family: str, name: str) -> PluginInfo:
        return self.infos[self.registries[family].entry(name).plugin]

    def require_available(self, family: str, name: str) -> None:
        """Raise a PluginError with an install hint when a member's dependency is missing."""
        member = self.registries[family].get(name)
        for module in member.requires:
            if importlib.util.find_spec(module) is None:
                hint = getattr(member, "install_hint", "") or f"pip install {module}"
                raise PluginError(f"{family[:-1]} '{name}' needs the package '{module}', which is not installed; {hint}")
