"""The ``tunery`` entry points, remembered between runs so that start-up stays fast.

Scanning every installed distribution with ``importlib.metadata`` (and importing it, with the
``email`` parser it needs) is the largest part of ``tunery --help``. The scan's result is kept in
``<cache>/entry-points.json`` under a key made of the modification times of every ``sys.path``
folder and of every distribution's ``entry_points.txt`` in them: installing, upgrading, removing
or editing a distribution changes the key, so a stale list is never used.
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
