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

    def __init__(self, family: str):
        self.family = family
        self.base = FAMILIES[family]
        self._entries: dict[str, Entry[M]] = {}
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
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.family[:-1]} '{name}' is registered by both plugin '{other}' and plugin '{plugin}'; "
                f"uninstall one or block it with TUNERY_DISABLE_PLUGINS={plugin}"
            )
        self._entries[name] = Entry(member, plugin, distribution)

    def remove_plugin(self, plugin: str) -> None:
        """Forget every member that ``plugin`` registered (used when its registration fails)."""
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]

    def get(self, name: str) -> M:
        """The member called ``name``; a PluginError lists the installed names otherwise."""
        try:
            return self._entries[name].member
        except KeyError:
            installed = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(
                f"no {self.family[:-1]} named '{name}'{closest(name, self._entries)}; installed: {installed}"
            ) from None

    def entry(self, name: str) -> Entry[M]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.plugin == plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[M]:
        return (self._entries[n].member for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
