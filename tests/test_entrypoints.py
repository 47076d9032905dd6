"""The remembered entry-point list is used while current and never when a distribution changed."""

from __future__ import annotations

import sys

import pytest

from tunery import entrypoints


def _dist(folder, name, points):
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tunery-test]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    return folder


def test_cache_is_used_while_current_and_refreshed_on_change(site, tmp_path, monkeypatch):
    _dist(site, "first", {"one": "json"})
    cache = tmp_path / "cache"
    found = entrypoints.entry_points("tunery-test", cache)
    assert [(p.name, p.distribution, p.version) for p in found] == [("one", "first", "0.1")]
    assert found[0].load() is sys.modules["json"]

    scans = []
    real_scan = entrypoints._scan
    monkeypatch.setattr(entrypoints, "_scan", lambda group: scans.append(group) or real_scan(group))
    assert entrypoints.entry_points("tunery-test", cache) == found and scans == []  # from the cache

    (site / "first-0.1.dist-info" / "entry_points.txt").write_text("[tunery-test]\none = json\ntwo = os.path:join\n")
    names = [p.name for p in entrypoints.entry_points("tunery-test", cache)]
    assert names == ["one", "two"] and scans == ["tunery-test"]  # an edited distribution is rescanned
    _dist(site, "second", {"three": "json"})
    assert {p.name for p in entrypoints.entry_points("tunery-test", cache)} == {"one", "two", "three"}


def test_unwritable_cache_still_lists(site, tmp_path):
    _dist(site, "first", {"one": "json"})
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert [p.name for p in entrypoints.entry_points("tunery-test", blocker / "cache")] == ["one"]
