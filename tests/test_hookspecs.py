"""Meta-tests: every hook is documented, in the generated reference, and exercised by a test."""

from __future__ import annotations

from pathlib import Path

from tunery.docs import hook_functions, hooks_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_prefixed_typed_and_documented():
    hooks = hook_functions()
    assert len(hooks) >= 12
    for fn in hooks:
        assert fn.__name__.startswith("tunery_")
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"{fn.__name__} needs a docstring that is its contract"
        assert "return" in fn.__annotations__, f"{fn.__name__} needs a return annotation"


def test_generated_hook_reference_is_current():
    committed = (ROOT / "docs" / "hooks.md").read_text()
    assert committed == hooks_markdown(), "docs/hooks.md is stale: run `python -m tunery.docs docs`"


def test_every_hook_is_exercised_by_some_test():
    this = Path(__file__).name
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != this)
    untested = [fn.__name__ for fn in hook_functions() if fn.__name__ not in sources]
    assert not untested, f"hooks without a test: {untested}"
