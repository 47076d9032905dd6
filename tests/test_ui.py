"""`tunery ui` driven through a real headless Chromium (Playwright): the form, a bad option's error,
live curves, a finished run, generation, stop and resume, and comparing two runs.

Screenshots of each page go to the pytest tmp folder; the path is printed (pytest -s shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_server(tmp_path):
    runs = tmp_path / "runs"
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tunery.cli", "ui", "--port", str(port), "--runs", str(runs)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"tunery ui did not start: {(tmp_path / 'ui.log').read_text()}")
            time.sleep(0.5)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tunery-ui-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                       args=ARGS, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(90000)  # generous: CI machines may be busy
        yield context.new_page()
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def fill(page, field_id: str, text: str) -> None:
    page.locator(f"#{field_id}").locator("textarea, input").first.fill(text)


def pick(page, field_id: str, option: str, timeout: float = 30) -> None:
    """Choose ``option`` in a Gradio dropdown by typing it and pressing Enter, as a user can; its
    choices may still be on their way from the server, so try again until it is taken."""
    deadline = time.time() + timeout
    box = page.locator(f"#{field_id} input").first
    while True:
        box.click()
        box.fill(option)
        box.press("Enter")
        page.locator("h2").first.click()  # blur: the choice is committed or the text is dropped
        selected = page.locator(f"#{field_id}").inner_text()
        if f"{option}" in selected.split() or box.input_value() == option:
            return
        if time.time() > deadline:
            raise AssertionError(f"could not choose {option!r} in #{field_id}")
        time.sleep(0.5)


def open_form(page, url: str, values: list[tuple[str, str]]) -> None:
    """Load the page and fill New-run fields (after the page has named a fresh output_dir)."""
    page.goto(url)
    out = page.locator("#field-top-output_dir").locator("textarea, input").first
    out.wait_for()
    page.wait_for_function("e => e.value.includes('run-')", arg=out.element_handle())
    for field, value in values:
        fill(page, field, value)


def shot(page, path: Path) -> None:
    page.screenshot(path=path, full_page=True, timeout=120000)


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_for_status(page, word: str, timeout: float = 300, seen: list | None = None) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = text_of(page, "run-status")
        if seen is not None:
            seen.append((status, text_of(page, "plot-loss")))
        if re.search(rf"\b{word}\b", status):
            return status
        if "failed" in status:
            raise AssertionError(status)
        time.sleep(0.3)
    raise AssertionError(f"no '{word}' status in time; last: {status}")


@contextlib.contextmanager
def paused(run_dir: Path, ready, timeout: float = 180):
    """Freeze the run's training process (SIGSTOP) as soon as ``ready()`` holds, and let it go on
    (SIGCONT) on exit: what the page shows of a run part-way is then checked however fast the
    machine trains. A signal sent meanwhile (the Stop button's) is acted on when it continues."""
    deadline = time.time() + timeout
    while True:
        try:
            record = json.loads((run_dir / "tunery-run.json").read_text())
        except (OSError, ValueError):  # not written yet, or being written
            record = {}
        if record.get("pid") and ready():
            break
        assert time.time() < deadline, f"{run_dir.name}: not ready in time"
        time.sleep(0.005)
    os.kill(record["pid"], signal.SIGSTOP)
    try:
        assert record.get("status") == "running", f"{run_dir.name} was paused too late: {record.get('status')}"
        yield
    finally:
        os.kill(record["pid"], signal.SIGCONT)


def loss_points(run_dir: Path) -> int:
    """The points of the loss plot the run's train_log.jsonl makes (a line being written is skipped)."""
    try:
        lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    records = [json.loads(line) for line in lines if line.endswith("}")]
    return sum(("loss" in r) + ("eval_loss/loss" in r) for r in records)


@pytest.mark.slow  # ~7 min on a quiet 2-core machine (a browser, three runs): run with -m slow
def test_ui_end_to_end(ui_server, page, tiny_lm, alpaca_file, run_cli, tmp_path):
    url, runs = ui_server
    started = time.time()

    def phase(name):
        print(f"{name}: {time.time() - started:.1f} s")

    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        common = [("field-top-model", tiny_lm), ("field-data-train", str(alpaca_file)),
                  ("field-data-val_split", "0.2"), ("field-training-learning_rate", "0.01")]
        open_form(page, url, [*common, ("field-top-output_dir", str(runs / "a")), ("field-training-max_steps", "60"),
                              ("field-method-lora-r", "abc")])
        phase("form filled")

        # a bad option: the CLI's one-line error, next to the field
        cli = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", alpaca_file,
                      "--output-dir", tmp_path / "cli-run", "--set", "method.r=abc")
        cli_error = next(line for line in cli.output.splitlines() if line.startswith("error: "))
        page.click("#check-button")
        error = page.locator("#field-method-lora-r-error")
        error.wait_for(state="visible")
        assert error.inner_text().strip() == cli_error
        assert not page.locator("#form-error").is_visible()
        shot(page, shots / "new-run-error.png")

        fill(page, "field-method-lora-r", "4")
        page.click("#check-button")
        page.wait_for_selector("#form-status:has-text('valid')")
        assert not error.is_visible()
        yaml_text = text_of(page, "config-yaml")
        assert "r: 4" in yaml_text and "max_steps: 60" in yaml_text
        assert "--method lora" in text_of(page, "config-cli")
        shot(page, shots / "new-run.png")

        phase("error checked")
        # start it: the Runs page follows the run, its loss curve grows, then it finishes
        page.click("#start-button")
        with paused(runs / "a", lambda: loss_points(runs / "a") > 0):
            # the run is frozen part-way: the page must show it running, with its partial curve
            logged = loss_points(runs / "a")
            assert logged < 60
            page.wait_for_selector("#run-status:has-text('running')", timeout=180000)
            page.wait_for_selector(f"#plot-loss:has-text('{logged} points')")
        wait_for_status(page, "finished")
        assert (runs / "a" / "metrics.json").is_file()
        page.wait_for_selector("#plot-loss:has-text('60 points')")
        page.wait_for_selector("#run-evaluations:has-text('loss/loss')")
        assert "It is" in text_of(page, "run-worst")  # the worst examples of the loss evaluator
        shot(page, shots / "runs.png")

        phase("run a finished")
        # Try it: generate with the finished run
        page.get_by_role("tab", name="Try it").click()
        pick(page, "try-run", "a")
        fill(page, "chat-input", "What is 2 plus 2?")
        page.click("#generate-button")
        bot = page.locator("#chat .bot, #chat [data-testid='bot']").last
        bot.wait_for(timeout=180000)
        reply = bot.inner_text().strip()
        assert reply and not reply.startswith("error"), reply
        shot(page, shots / "try-it.png")

        phase("generated")
        # a second run, from a reloaded page (nothing is lost: run a is still listed), stopped and resumed
        open_form(page, url, [*common, ("field-top-output_dir", str(runs / "b")), ("field-training-learning_rate", "0.02"),
                              ("field-training-max_steps", "100"), ("field-training-save_steps", "10")])
        page.click("#start-button")
        with paused(runs / "b", lambda: any((runs / "b" / "checkpoints").glob("checkpoint-*/tunery-complete.json"))):
            page.wait_for_selector("#run-status:has-text('running')", timeout=180000)
            page.click("#stop-button")
        status = wait_for_status(page, "stopped")
        assert re.search(r"(resume point:|the last good checkpoint is) \S+/checkpoint-\d+", status), status
        shot(page, shots / "runs-stopped.png")
        page.click("#resume-button")
        status = wait_for_status(page, "finished")
        assert "--resume" in json.loads((runs / "b" / "tunery-ui.json").read_text())["command"]
        assert "step 100" in status, status
        table = text_of(page, "runs-table")
        assert re.search(r"\ba\s+finished", table) and re.search(r"\bb\s+finished", table), table

        phase("run b stopped and resumed")
        # Compare the two runs: the learning rate differs
        page.get_by_role("tab", name="Compare").click()
        pick(page, "compare-runs", "a")
        pick(page, "compare-runs", "b")
        page.click("#compare-button")
        page.wait_for_selector("#compare-config tr.diff")
        diff_rows = page.locator("#compare-config tr.diff").all_inner_texts()
        assert any("training.learning_rate" in r and "0.01" in r and "0.02" in r for r in diff_rows), diff_rows
        assert not any(r.startswith("model") for r in diff_rows)
        assert "after: loss/loss" in text_of(page, "compare-metrics")
        shot(page, shots / "compare.png")
    except Exception:
        shot(page, shots / "failure.png")
        print(f"\nscreenshot at the failure: {shots / 'failure.png'}")
        raise
    print(f"\nscreenshots of the UI: {shots}")
