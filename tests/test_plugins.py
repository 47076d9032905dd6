"""Plugin discovery, isolation of broken plugins, allow/block lists, strict mode, duplicates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tunery import Engine, Method, hookimpl
from tunery.errors import PluginError
from tunery.plugins import PluginWarning

# Every built-in plugin is an entry point in the project's own pyproject.toml, like a third-party one.
BUILTIN = set(tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
              ["project"]["entry-points"]["tunery"])
assert len(BUILTIN) >= 26


def make_distribution(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """A fake installed distribution: modules plus a dist-info with entry points in group tunery."""
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tunery]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    )
    return root


@pytest.fixture
def broken_dist(tmp_path, monkeypatch):
    """Installs plugins that fail in every way a plugin can fail."""
    make_distribution(tmp_path, "tunery-broken", {
        "broken_import": "raise RuntimeError('boom at import')\n",
        "missing_dep": "import not_installed_dependency_xyz\n",
        "broken_register": """
            from tunery import hookimpl
            @hookimpl
            def tunery_register_methods(registry):
                raise ValueError('cannot register')
        """,
        "misspelled_hook": """
            from tunery import hookimpl
            @hookimpl
            def tunery_register_method(registry):
                pass
        """,
        "duplicate_lora": """
            from tunery import Method, hookimpl
            class Lora2(Method):
                name = 'lora'
            @hookimpl
            def tunery_register_methods(registry):
                registry.add(Lora2())
        """,
    }, {
        "broken-import": "broken_import", "missing-dep": "missing_dep", "broken-register": "broken_register",
        "misspelled": "misspelled_hook", "zz-duplicate": "duplicate_lora",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_plugins_are_discovered_with_distribution_and_version():
    engine = Engine()
    infos = {i.name: i for i in engine.plugins}
    assert BUILTIN <= set(infos)
    for name in BUILTIN:
        assert infos[name].status == "ok", infos[name]
        assert infos[name].distribution == "tunery" and infos[name].version
    assert infos["lora"].members["methods"] == ["lora"]
    assert infos["alpaca"].members["formatters"] == ["alpaca"]
    assert "lora" in engine.methods and "loss" in engine.evaluators and "none" in engine.quantizers


def test_broken_plugins_are_isolated_and_reported(broken_dist):
    with pytest.warns(PluginWarning):
        engine = Engine()
    infos = {i.name: i for i in engine.plugins}
    assert infos["broken-import"].status == "failed: RuntimeError: boom at import"
    assert infos["missing-dep"].status == "unavailable: missing dependency not_installed_dependency_xyz"
    assert infos["broken-register"].status == "failed: ValueError: cannot register"
    assert infos["misspelled"].status.startswith("failed: PluginError: unknown hook tunery_register_method")
    assert "tunery_register_methods" in infos["misspelled"].status  # the closest valid hook is suggested
    assert infos["broken-import"].distribution == "tunery-broken"
    # everything else still works; a name provided twice is never resolved by load order
    assert all(infos[name].ok for name in BUILTIN)
    conflict = ("method 'lora' is registered by both plugin 'lora' (tunery) and plugin 'zz-duplicate' "
                "(tunery-broken); tunery will not choose between them")
    assert any(conflict in p for p in infos["zz-duplicate"].problems)
    assert any(conflict in p for p in infos["lora"].problems)
    with pytest.raises(PluginError, match="TUNERY_DISABLE_PLUGINS=zz-duplicate"):
        engine.methods.get("lora")
    with pytest.raises(PluginError, match=re.escape(conflict)):
        engine.train({"model": "m", "output_dir": "o", "method": "lora", "format": "alpaca", "data": {"train": ["x"]}})
    assert type(Engine(env={"TUNERY_DISABLE_PLUGINS": "zz-duplicate"}).methods.get("lora")).__module__ == "tunery_lora"


def test_strict_mode_makes_a_broken_plugin_fatal(broken_dist):
    with pytest.raises(PluginError, match="broken-import.*TUNERY_STRICT_PLUGINS"):
        Engine(env={"TUNERY_STRICT_PLUGINS": "1"})


def test_allow_and_block_lists():
    only = Engine(env={"TUNERY_PLUGINS": "lora,alpaca"})
    assert only.methods.names() == ["lora"] and only.formatters.names() == ["alpaca"]
    assert {i.name for i in only.plugins if i.status == "disabled"} == BUILTIN - {"lora", "alpaca"}
    blocked = Engine(env={"TUNERY_DISABLE_PLUGINS": "lora"})
    assert "lora" not in blocked.methods and "full" in blocked.methods
    bare = Engine(env={"TUNERY_DISABLE_AUTOLOAD": "1"})  # only the essentials a run needs
    assert {i.name for i in bare.plugins} == {"models", "none", "sft"} and len(bare.methods) == 0


class BitFlip(Method):
    name = "bitflip"


class Observer:
    def __init__(self):
        self.events = []

    @hookimpl
    def tunery_register_methods(self, registry):
        registry.add(BitFlip())

    @hookimpl
    def tunery_run_start(self, run):
        self.events.append("start")


def test_two_engines_do_not_share_plugins():
    first = Engine(autoload=False, plugins=[Observer()])
    second = Engine(autoload=False)
    assert first.methods.names() == ["bitflip"]
    assert second.methods.names() == []
    assert first.plugins[0].members["methods"] == ["bitflip"]
    with pytest.raises(PluginError, match="no method named 'bitflp' \\(did you mean 'bitflip'\\?\\); installed: bitflip"):
        first.methods.get("bitflp")


def test_registry_refuses_classes_and_non_members():
    class NotAMember:
        name = "x"

    class Bad:
        @hookimpl
        def tunery_register_methods(self, registry):
            registry.add(NotAMember())

    class ClassInstead:
        @hookimpl
        def tunery_register_methods(self, registry):
            registry.add(BitFlip)

    engine = Engine(autoload=False, plugins=[Bad(), ClassInstead()], env={})
    statuses = {i.name: i.status for i in engine.plugins}
    assert "not a subclass of tunery.Method" in statuses["Bad"]
    assert "register an instance" in statuses["ClassInstead"]


def test_lifecycle_hook_failure_is_reported_by_name(caplog):
    class Faulty:
        @hookimpl
        def tunery_log(self, run, record):
            raise RuntimeError("observer bug")

    engine = Engine(autoload=False, plugins=[Faulty()], env={})
    engine.notify("tunery_log", run=None, record={"step": 1})
    assert "plugin 'Faulty' failed in tunery_log: RuntimeError: observer bug" in caplog.text
    strict = Engine(autoload=False, plugins=[Faulty()], env={"TUNERY_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match="Faulty"):
        strict.notify("tunery_log", run=None, record={})


def _cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tunery.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_plugins_json_lists_builtins_and_survives_broken_plugins(broken_dist):
    out = _cli("plugins", "--json", env_extra={"PYTHONPATH": str(broken_dist)})
    assert out.returncode == 0, out.stderr
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert BUILTIN <= set(listed)
    assert set(listed["lora"]) == {"name", "distribution", "version", "status", "members", "hooks", "problems"}
    assert set(listed["lora"]["members"]) == {"methods", "objectives", "extensions", "formatters", "quantizers",
                                              "evaluators", "rewards", "constraints"}
    assert listed["broken-import"]["status"].startswith("failed")


def test_cli_help_imports_no_heavy_library():
    code = ("import sys; from tunery.cli import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch','transformers','peft','datasets','bitsandbytes') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    code = code.replace("['--help']", "['plugins']")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_third_party_plugin_adds_members_of_every_family_and_a_command(tmp_path):
    make_distribution(tmp_path, "tunery-everything", {"everything": """
        import click
        from tunery import Constraint, Evaluator, Extension, Formatter, Method, Objective, Quantizer, Reward, hookimpl

        class Ascend(Objective):
            name = 'ascend'
        class Noise(Extension):
            name = 'noise'
        class Upper(Formatter):
            name = 'upper'
        class Half(Quantizer):
            name = 'half'
        class Count(Evaluator):
            name = 'count'
        class Noop(Method):
            name = 'noop'
        class Kind(Reward):
            name = 'kind'
        class Shout(Constraint):
            name = 'shout'

        @hookimpl
        def tunery_register_methods(registry):
            registry.add(Noop())
        @hookimpl
        def tunery_register_objectives(registry):
            registry.add(Ascend())
        @hookimpl
        def tunery_register_extensions(registry):
            registry.add(Noise())
        @hookimpl
        def tunery_register_formatters(registry):
            registry.add(Upper())
        @hookimpl
        def tunery_register_quantizers(registry):
            registry.add(Half())
        @hookimpl
        def tunery_register_evaluators(registry):
            registry.add(Count())
        @hookimpl
        def tunery_register_rewards(registry):
            registry.add(Kind())
        @hookimpl
        def tunery_register_constraints(registry):
            registry.add(Shout())
        @hookimpl
        def tunery_register_commands(cli):
            @cli.command()
            @click.argument('who')
            def hello(who):
                '''Say hello (added by a plugin).'''
                click.echo(f'hello {who}')
    """}, {"everything": "everything"})
    env = {"PYTHONPATH": str(tmp_path)}
    listed = {p["name"]: p for p in json.loads(_cli("plugins", "--json", env_extra=env).stdout)}
    assert listed["everything"]["distribution"] == "tunery-everything" and listed["everything"]["version"] == "0.1"
    assert listed["everything"]["members"] == {"methods": ["noop"], "objectives": ["ascend"], "extensions": ["noise"],
                                               "formatters": ["upper"], "quantizers": ["half"], "evaluators": ["count"],
                                               "rewards": ["kind"], "constraints": ["shout"]}
    out = _cli("hello", "world", env_extra=env)
    assert out.returncode == 0 and out.stdout.strip() == "hello world"
    assert "hello" in _cli("--help", env_extra=env).stdout


def test_help_imports_only_command_plugins_and_sees_a_command_added_by_an_edit(tmp_path):
    """`tunery --help` loads the plugins that add commands (known from the last load), not all of
    them; a plugin edited to add a command is loaded again and its command is listed."""
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "tunery-quiet", {"quietplugin": """
        from tunery import Method, hookimpl
        class Quiet(Method):
            name = 'quiet'
        @hookimpl
        def tunery_register_methods(registry):
            registry.add(Quiet())
    """}, {"quiet": "quietplugin"})
    env = {"PYTHONPATH": str(site), "TUNERY_CACHE": str(tmp_path / "cache")}
    probe = ("import sys; from tunery.cli import cli\n"
             "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('tunery_') or m == 'quietplugin'))")
    run = lambda: subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,  # noqa: E731
                                 env={**os.environ, **env})
    first = run()  # nothing known yet: every plugin loads, and its hooks are remembered
    assert "quietplugin" in first.stdout
    second = run()
    imported = eval(second.stdout.strip().splitlines()[-1])
    assert "quietplugin" not in imported and "tunery_lora" not in imported
    assert {"tunery_sweep", "tunery_ui"} <= set(imported) and "sweep" in second.stdout

    module = site / "quietplugin.py"
    module.write_text(module.read_text() + textwrap.dedent("""
        import click
        @hookimpl
        def tunery_register_commands(cli):
            @cli.command()
            def whisper():
                '''Say it quietly (added by an edit).'''
    """))
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
    assert "whisper" in run().stdout
    assert "quiet" in json.dumps(json.loads(_cli("plugins", "--json", env_extra=env).stdout))
