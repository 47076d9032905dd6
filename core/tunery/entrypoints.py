"""The ``tunery`` entry points, remembered between runs so that start-up stays fast.

Scanning every installed distribution with ``importlib.metadata`` (and importing it, with the
``email`` parser it needs) is the largest part of ``tunery --help``. The scan's result is kept in
``<cache>/entry-points.json`` under a key made of the modification times of every ``sys.path``
folder and of every distribution's ``entry_points.txt`` in them: installing, upgrading, removing
or editing a distribution changes the key, so a stale list is never used.

Beside it, ``<cache>/plugin-hooks.json`` keeps the hooks each plugin implemented when it was last
loaded, with its module file's modification time: ``tunery --help`` then imports only the
plugins that add commands (and any it does not know), not all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class EntryPoint:
    """One entry point of the group: ``value`` is ``module`` or ``module:attribute``."""

    name: str
    value: str
    distribution: str
    version: str

    def load(self):
        import importlib

        module, _, attr = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
        return obj


def _key(group: str) -> str:
    parts = [group, sys.version]
    for entry in sys.path:
        try:
            parts.append(f"{entry}={os.stat(entry or '.').st_mtime_ns}")
            with os.scandir(entry or ".") as found:
                for item in found:
                    if item.name.endswith((".dist-info", ".egg-info")):
                        try:
                            parts.append(f"{item.name}={os.stat(os.path.join(item.path, 'entry_points.txt')).st_mtime_ns}")
                        except OSError:
                            continue
        except OSError:
            parts.append(f"{entry}=-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _scan(group: str) -> list[EntryPoint]:
    from importlib import metadata

    found = []
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        found.append(EntryPoint(ep.name, ep.value, dist.metadata["Name"] if dist else "", dist.version if dist else ""))
    return found


def entry_points(group: str, cache_dir: Path | None) -> list[EntryPoint]:
    """The entry points of ``group``, from the cache in ``cache_dir`` when it is current."""
    if cache_dir is None:
        return _scan(group)
    path = cache_dir / "entry-points.json"
    key = _key(group)
    try:
        cached = json.loads(path.read_text())
        if cached.get(group, {}).get("key") == key:
            return [EntryPoint(**e) for e in cached[group]["points"]]
    except (OSError, ValueError, TypeError, AttributeError):
        cached = {}
    points = _scan(group)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached = cached if isinstance(cached, dict) else {}
        cached[group] = {"key": key, "points": [dataclasses.asdict(p) for p in points]}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed
    return points


def _module_file(obj) -> str | None:
    module = obj if isinstance(obj, type(sys)) else sys.modules.get(getattr(obj, "__module__", ""), None)
    return getattr(module, "__file__", None)


def _stamp(file: str | None) -> int | None:
    try:
        return os.stat(file).st_mtime_ns if file else None
    except OSError:
        return None


def known_hooks(points: list[EntryPoint], cache_dir: Path | None) -> dict[str, list[str]]:
    """The hooks each of ``points`` implemented when it was last loaded, for the entry points
    whose target and module file are unchanged since (the others are unknown: load them)."""
    if cache_dir is None:
        return {}
    try:
        remembered = json.loads((cache_dir / "plugin-hooks.json").read_text())
    except (OSError, ValueError):
        return {}
    known = {}
    for ep in points:
        entry = remembered.get(ep.name) if isinstance(remembered, dict) else None
        if (isinstance(entry, dict) and entry.get("value") == ep.value and entry.get("file")
                and entry.get("stamp") == _stamp(entry["file"]) and isinstance(entry.get("hooks"), list)):
            known[ep.name] = entry["hooks"]
    return known


def remember_hooks(loaded: dict[str, tuple[EntryPoint, object, list[str]]], cache_dir: Path | None) -> None:
    """Keep, for each loaded entry point, the hooks its plugin implements (see :func:`known_hooks`)."""
    if cache_dir is None:
        return
    path = cache_dir / "plugin-hooks.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = {}
    record = dict(before) if isinstance(before, dict) else {}
    for name, (ep, obj, hooks) in loaded.items():
        file = _module_file(obj)
        record[name] = {"value": ep.value, "file": file, "stamp": _stamp(file), "hooks": sorted(hooks)}
    if record == before:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed
