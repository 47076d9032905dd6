"""Hooks are called one way: pluggy's order, tryfirst/trylast and wrappers honoured, and each
implementation isolated, for lifecycle, model-source and command hooks alike."""

from __future__ import annotations

import logging

import pytest

from tunery import Engine, ModelSourceError, PluginError, hookimpl
from tunery.hookspecs import hookimpl as spec_hookimpl


def test_lifecycle_hooks_follow_pluggy_order_with_tryfirst_trylast_and_wrappers():
    calls = []

    def observer(name, **opts):
        class Observer:
            @spec_hookimpl(**opts)
            def tunery_run_start(self, run):
                calls.append(name)
        plugin = Observer()
        plugin.__name__ = name
        return plugin

    class Wrapper:
        @hookimpl(wrapper=True)
        def tunery_run_start(self, run):
            calls.append("wrapper-before")
            result = yield
            calls.append("wrapper-after")
            return result

    engine = Engine(autoload=False, plugins=[observer("last", trylast=True), observer("early"), observer("late"),
                                             observer("first", tryfirst=True), Wrapper()])
    engine.notify("tunery_run_start", run=None)
    # later-registered plugins are asked first; tryfirst/trylast move to the ends; a wrapper wraps it all
    assert calls == ["wrapper-before", "first", "late", "early", "last", "wrapper-after"]


def test_a_raising_implementation_is_isolated_and_reported(caplog):
    calls = []

    class Raising:
        @hookimpl
        def tunery_run_start(self, run):
            raise RuntimeError("boom")

    class Quiet:
        @hookimpl
        def tunery_run_start(self, run):
            calls.append("quiet")

    class BrokenWrapper:
        @hookimpl(wrapper=True)
        def tunery_run_start(self, run):
            yield
            raise ValueError("after")

    engine = Engine(autoload=False, plugins=[Quiet(), Raising(), BrokenWrapper()])
    with caplog.at_level(logging.WARNING, logger="tunery"):
        engine.notify("tunery_run_start", run=None)
    assert calls == ["quiet"]
    assert "plugin 'Raising' failed in tunery_run_start: RuntimeError: boom" in caplog.text
    assert "plugin 'BrokenWrapper' failed in tunery_run_start: ValueError: after" in caplog.text
    infos = {i.name: i for i in engine.plugins}
    assert infos["Raising"].problems == ["failed in tunery_run_start: RuntimeError: boom"]
    strict = Engine(autoload=False, plugins=[Raising()], env={"TUNERY_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match="plugin 'Raising' failed in tunery_run_start"):
        strict.notify("tunery_run_start", run=None)


def test_a_raising_model_source_does_not_break_other_models(tiny_lm):
    class BrokenStore:
        @hookimpl
        def tunery_resolve_model(self, reference, cache_dir):
            raise ConnectionError("model store is down")

    engine = Engine(plugins=[BrokenStore()])  # asked first (registered last), and it raises
    assert engine.resolve_model(tiny_lm).path == tiny_lm
    assert any("tunery_resolve_model" in p for p in {i.name: i for i in engine.plugins}["BrokenStore"].problems)
    with pytest.raises(ModelSourceError):
        engine.resolve_model("/no/such/model")


def test_a_member_of_a_plugin_that_failed_to_load_names_the_failure(tmp_path, monkeypatch):
    from tunery import ConfigError
    from tunery.plugins import PluginWarning

    from tests.test_plugins import make_distribution

    make_distribution(tmp_path, "tunery-extras", {"extras_pkg": "raise ImportError('no module named fancy_kernels')"},
                      {"extras": "extras_pkg"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning):
        engine = Engine()
    with pytest.raises(ConfigError) as error:
        engine.config({"model": "m", "output_dir": "o", "method": "extras", "format": "alpaca",
                       "data": {"train": ["x.json"]}})
    assert "plugin 'extras' failed to load: ImportError: no module named fancy_kernels" in str(error.value)


def test_registering_an_installed_plugin_object_again_is_a_clear_error():
    import tunery_lora

    with pytest.raises(PluginError, match="already registered as plugin 'lora'.*autoload=False"):
        Engine(plugins=[tunery_lora])
    assert "lora" in Engine(autoload=False, plugins=[tunery_lora]).methods


def test_a_raising_command_plugin_leaves_the_cli_working_and_is_listed(tmp_path):
    import os
    import subprocess
    import sys

    from tests.test_plugins import make_distribution

    make_distribution(tmp_path, "tunery-badcli", {"badcli": """
        from tunery import hookimpl
        @hookimpl
        def tunery_register_commands(cli):
            raise RuntimeError('cannot add my command')
    """}, {"badcli": "badcli"})
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    helped = subprocess.run([sys.executable, "-m", "tunery.cli", "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "Traceback" not in helped.stderr and "train" in helped.stdout
    listed = subprocess.run([sys.executable, "-m", "tunery.cli", "plugins"], capture_output=True, text=True, env=env)
    assert "failed in tunery_register_commands: RuntimeError: cannot add my command" in listed.stdout


def test_two_distributions_with_one_plugin_name_are_both_refused(tmp_path, monkeypatch):
    from tunery.plugins import PluginWarning

    from tests.test_plugins import make_distribution

    code = """
        from tunery import Method, hookimpl
        class Impostor(Method):
            name = 'impostor-{n}'
        @hookimpl
        def tunery_register_methods(registry):
            registry.add(Impostor())
    """
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    make_distribution(tmp_path / "a", "tunery-first", {"first_mod": code.format(n=1)}, {"lora": "first_mod"})
    make_distribution(tmp_path / "b", "tunery-second", {"second_mod": code.format(n=2)}, {"lora": "second_mod"})
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    with pytest.warns(PluginWarning):
        engine = Engine()
    info = {i.name: i for i in engine.plugins}["lora"]
    assert "plugin name 'lora' is provided by distributions" in info.status and "tunery-first" in info.status
    assert not any(name.startswith("impostor") for name in engine.methods.names())
