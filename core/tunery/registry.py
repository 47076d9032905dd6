"""Registries of plugin members, one per family, owned by an engine."""

from __future__ import annotations

import dataclasses
from typing import Generic, Iterator, TypeVar

from .errors import PluginError
from .members import FAMILIES, Member
from .options import closest

M = TypeVar("M", bound=Member)


@dataclasses.dataclass
class Entry(Generic[M]):
    """A registered member and the plugin that provided it."""

    member: M
    plugin: str
    distribution: str


class Registry(Generic[M]):
    """Members of one family, by name. Plugins receive it (bound to themselves) in a
    ``tunery_register_*`` hook and call :meth:`add`."""

    def __init__(self, family: str, unavailable: dict[str, str] | None = None):
        self.family = family
        self.base = FAMILIES[family]
        self._entries: dict[str, Entry[M]] = {}
        self._conflicts: dict[str, list[Entry[M]]] = {}  # names provided by more than one plugin
        #: plugin name -> why it is not loaded (shared by the host's registries), for messages
        self.unavailable: dict[str, str] = {} if unavailable is None else unavailable
        self._plugin = ("<direct>", "")

    def bound(self, plugin: str, distribution: str) -> Registry[M]:
        """A view of this registry that records ``plugin`` as the provider of what it adds."""
        view = object.__new__(Registry)
        view.__dict__.update(self.__dict__)
        view._plugin = (plugin, distribution)
        return view

    def add(self, member: M) -> None:
        """Register ``member``; refuse a wrong type, a missing name or a duplicate name."""
        plugin, distribution = self._plugin
        if isinstance(member, type):
            raise PluginError(
                f"plugin '{plugin}' registered the class {member.__name__} as a {self.family[:-1]}; register an instance"
            )
        if not isinstance(member, self.base):
            raise PluginError(
                f"plugin '{plugin}' registered {member!r} as a {self.family[:-1]}, "
                f"but it is not a subclass of tunery.{self.base.__name__}"
            )
        name = member.name
        if not name or not isinstance(name, str) or name != name.strip() or " " in name:
            raise PluginError(f"plugin '{plugin}' registered a {self.family[:-1]} with an invalid name {name!r}")
        entry = Entry(member, plugin, distribution)
        if name in self._conflicts:
            self._conflicts[name].append(entry)
        elif name in self._entries:  # never resolved by load order: the name is refused until one is removed
            self._conflicts[name] = [self._entries.pop(name), entry]
        else:
            self._entries[name] = entry

    def remove_plugin(self, plugin: str) -> None:
        """Forget every member that ``plugin`` registered (used when its registration fails)."""
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]
        for name, entries in list(self._conflicts.items()):
            entries[:] = [e for e in entries if e.plugin != plugin]
            if len(entries) == 1:
                self._entries[name] = entries[0]
            if len(entries) <= 1:
                del self._conflicts[name]

    def conflict(self, name: str) -> str | None:
        """Why ``name`` cannot be used because several plugins provide it (``None`` if it can)."""
        entries = self._conflicts.get(name)
        if not entries:
            return None
        providers = " and ".join(f"plugin '{e.plugin}' ({e.distribution or 'no distribution'})" for e in entries)
        blocks = ",".join(e.plugin for e in entries if e.distribution != "tunery") or entries[-1].plugin
        return (f"{self.family[:-1]} '{name}' is registered by both {providers}; tunery will not choose between "
                f"them: uninstall one, or block one with TUNERY_DISABLE_PLUGINS={blocks}")

    def members_of(self, plugin: str) -> list[M]:
        """The members ``plugin`` registered, including those in conflict with another plugin."""
        entries = [*self._entries.values(), *(e for es in self._conflicts.values() for e in es)]
        return [e.member for e in entries if e.plugin == plugin]

    def names_in_conflict(self) -> list[str]:
        return sorted(self._conflicts)

    def providers(self, name: str) -> list[str]:
        """The plugins that registered ``name``."""
        if name in self._conflicts:
            return [e.plugin for e in self._conflicts[name]]
        return [self._entries[name].plugin] if name in self._entries else []

    def get(self, name: str) -> M:
        """The member called ``name``; a PluginError says why it cannot be had otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            raise PluginError(self.conflict(name) or self.unknown(name))
        return entry.member

    def unknown(self, name: str) -> str:
        """The message for a name no loaded plugin provides: the plugin that failed to load
        when one has that name, else the closest names and the installed ones."""
        if name in self.unavailable:
            return f"no {self.family[:-1]} named '{name}': plugin '{name}' {self.unavailable[name]}"
        failed = "".join(f"; plugin '{p}' {why}" for p, why in sorted(self.unavailable.items())
                         if not why.startswith("is disabled"))
        installed = ", ".join(sorted(self._entries)) or "none"
        return f"no {self.family[:-1]} named '{name}'{closest(name, self._entries)}; installed: {installed}{failed}"

    def entry(self, name: str) -> Entry[M]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        """Names ``plugin`` registered, including those in conflict with another plugin."""
        mine = {n for n, e in self._entries.items() if e.plugin == plugin}
        return sorted(mine | {n for n, es in self._conflicts.items() if any(e.plugin == plugin for e in es)})

    def __contains__(self, name: str) -> bool:
        """Whether a plugin provides ``name`` (usable, or refused as a conflict by :meth:`get`)."""
        return name in self._entries or name in self._conflicts

    def __iter__(self) -> Iterator[M]:
        return (self._entries[n].member for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
