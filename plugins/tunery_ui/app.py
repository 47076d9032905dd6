"""The Gradio app of ``tunery ui``: New run, Runs, Try it and Compare pages.

Imported only by the ``ui`` command (it imports gradio). The pages read everything from the run
folders (see :mod:`tunery_ui.runs`); training runs in separate processes.
"""

from __future__ import annotations

import html
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from tunery import TuneryError  # noqa: E402

from . import runs as runstate  # noqa: E402
from .form import DEFAULT, LIST_SECTIONS, PLUGIN_SECTIONS, Field, Form, check, cli_command, config_yaml, inside  # noqa: E402

CSS = """
.tunery-error, .tunery-error * { color: #b91c1c !important; font-weight: 600; }
.tunery-table table { border-collapse: collapse; font-size: 0.9em; }
.tunery-table td, .tunery-table th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
.tunery-table tr.diff td { background: #fef3c7; }
"""
SECTION_TITLES = {"data": "Data", "training": "Training", "generation": "Generation (sample prompts)",
                  "early_stopping": "Early stopping"}
OPEN_SECTIONS = ("data", "training")
CURVES = (("loss", "loss"), ("learning_rate", "learning rate"), ("tokens_per_s", "tokens/s"))


def _error_html(message: str) -> str:
    return f'<span class="tunery-error-text">error: {html.escape(message)}</span>'


def _component(field: Field, form: Form) -> gr.components.Component:
    label = field.name if field.key not in ("model", "output_dir") else field.key
    common = {"label": label, "elem_id": field.id, "info": field.info()}
    if field.kind == "members":
        members = form.members[field.section]
        choices = [(f"{m.name} — {m.description}" if m.description else m.name, m.name) for m in members]
        common.pop("info")
        if field.section in LIST_SECTIONS:
            label = {"evaluators": "evaluators (none ticked: the format's defaults)",
                     "extensions": "extensions (any number, applied in this order)"}.get(field.section, field.section)
            return gr.CheckboxGroup(choices, value=[], label=label, elem_id=field.id)
        if field.section == "objective":
            choices = [("(the data's default objective)", DEFAULT), *choices]
        return gr.Dropdown(choices, value=field.default, **common)
    if field.kind == "bool":
        return gr.Checkbox(value=field.initial(), **common)
    if field.kind in ("tristate", "choice"):
        return gr.Dropdown(list(field.choices), value=field.initial(), **common)
    if field.key.endswith(".*"):
        common.update(label="other options (YAML mapping)", info="keys this plugin accepts beyond the fields above")
    initial = field.initial()
    return gr.Textbox(value=initial, lines=3 if "\n" in initial else 1, **common)


class App:
    """The pages, bound to one engine and one runs folder."""

    def __init__(self, engine, runs_dir: str | Path):
        self.engine = engine
        self.runs_dir = Path(runs_dir).resolve()
        self.form = Form.build(engine)
        self.inputs: dict[str, gr.components.Component] = {}
        self.errors: dict[str, gr.Markdown] = {}
        self.groups: dict[tuple[str, str], gr.Group] = {}
        self.accordions: dict[str, gr.Accordion] = {}
        self.field_accordion: dict[str, str] = {}

    # ------------------------------------------------------------------ building

    def _add(self, field: Field, accordion: str | None = None) -> None:
        """The field's input with its error line right under it."""
        with gr.Column(min_width=240):
            self.inputs[field.id] = _component(field, self.form)
            self.errors[field.id] = gr.Markdown(visible=False, elem_id=f"{field.id}-error",
                                                elem_classes=["tunery-error"])
        if accordion:
            self.field_accordion[field.id] = accordion

    def _grid(self, fields: list[Field], accordion: str | None, per_row: int = 4) -> None:
        for start in range(0, len(fields), per_row):
            with gr.Row(equal_height=False):
                for field in fields[start:start + per_row]:
                    self._add(field, accordion)
                for _ in range(per_row - len(fields[start:start + per_row])):
                    gr.Column(min_width=240)

    def _plugin_section(self, section: str) -> None:
        selector = self.form.selector(section)
        title = {"method": "Method", "objective": "Objective", "format": "Data format", "quantizer": "Quantizer",
                 "extensions": "Extensions", "evaluators": "Evaluators"}.get(section, section)
        with gr.Accordion(title, open=section in ("method", "format")) as acc:
            self.accordions[section] = acc
            self._add(selector, section)
            for member in self.form.members[section]:
                fields = self.form.section(section, member.name)
                if not fields:
                    continue
                visible = member.name == selector.default
                with gr.Column(visible=visible) as group:
                    gr.Markdown(f"**{member.name}** options")
                    self._grid(fields, section)
                self.groups[(section, member.name)] = group

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="tunery", analytics_enabled=False) as demo:
            gr.Markdown(f"## tunery · runs in `{self.runs_dir}`")
            with gr.Tabs() as self.tabs:
                with gr.Tab("New run", id="new"):
                    self._new_run_page(demo)
                with gr.Tab("Runs", id="runs"):
                    self._runs_page(demo)
                with gr.Tab("Try it", id="try") as try_tab:
                    self._try_page(try_tab)
                with gr.Tab("Compare", id="compare") as compare_tab:
                    self._compare_page(compare_tab)
            self._keep_run_lists_fresh()
        return demo

    def _keep_run_lists_fresh(self) -> None:
        """Every 2 s, the run pickers of every page get the runs that appeared or finished since."""
        known = gr.State(None)

        def refresh(previous):
            names, finished = self._run_names(), self._finished()
            if (names, finished) == previous:
                return [gr.skip()] * 4
            return [(names, finished), gr.update(choices=names), gr.update(choices=finished), gr.update(choices=names)]

        gr.Timer(2.0).tick(refresh, known, [known, self.run_select, self.try_run, self.compare_runs],
                           show_progress="hidden")

    # ------------------------------------------------------------------ New run

    def _new_run_page(self, demo: gr.Blocks) -> None:
        form = self.form
        self.form_error = gr.Markdown(visible=False, elem_id="form-error", elem_classes=["tunery-error"])
        top = {f.key: f for f in form.fields if f.section == "" and f.key in ("model", "output_dir")}
        with gr.Row(equal_height=False):
            self._add(top["model"])
            models = [m.reference for m in self.engine.list_models()]
            picker = gr.Dropdown(models, value=None, label="offline models (fills model)", elem_id="model-picker")
            self._add(top["output_dir"])
        for section in ("method", "format", "objective"):
            self._plugin_section(section)
        nested = [s for s in dict.fromkeys(f.section for f in form.fields)
                  if s and s not in PLUGIN_SECTIONS and s not in LIST_SECTIONS]
        for name in nested:  # every core section of the config, those added later included
            with gr.Accordion(SECTION_TITLES.get(name, name.replace("_", " ").capitalize()),
                              open=name in OPEN_SECTIONS) as acc:
                self.accordions[name] = acc
                self._grid(form.section(name), name)
                if name == "data":
                    upload = gr.UploadButton("Upload a data file", file_count="single", size="sm")
        for section in ("quantizer", "extensions", "evaluators"):
            self._plugin_section(section)
        with gr.Accordion("Other", open=False) as acc:
            self.accordions["other"] = acc
            self._grid([f for f in form.fields if f.section == "" and f.key not in top], "other")
        with gr.Row():
            check_btn = gr.Button("Check", elem_id="check-button")
            start_btn = gr.Button("Start training", variant="primary", elem_id="start-button")
        self.form_status = gr.Markdown(elem_id="form-status")
        with gr.Row():
            yaml_code = gr.Code(language="yaml", label="config (tunery train run.yaml)", elem_id="config-yaml",
                                interactive=False)
            cli_code = gr.Code(language="shell", label="the same as one command", elem_id="config-cli",
                               interactive=False)
        with gr.Row():
            yaml_file = gr.DownloadButton("Download run.yaml", elem_id="download-yaml", interactive=False)
            cli_file = gr.DownloadButton("Download run.sh", elem_id="download-sh", interactive=False)

        ids = [f.id for f in form.fields]
        inputs = [self.inputs[i] for i in ids]
        errors = [self.errors[i] for i in ids]
        accordions = list(self.accordions.values())
        outputs = [self.form_error, *errors, *accordions, yaml_code, cli_code, yaml_file, cli_file, self.form_status]

        picker.change(lambda m: m or gr.skip(), picker, self.inputs[top["model"].id])
        upload.upload(self._uploaded, upload, self.inputs[next(f.id for f in form.fields if f.key == "data.train")])
        output_dir = self.inputs[top["output_dir"].id]
        demo.load(lambda current: current or self._fresh_output_dir(), output_dir, output_dir)
        for section in (*PLUGIN_SECTIONS, *LIST_SECTIONS):
            selector = self.inputs[form.selector(section).id]
            groups = {m: g for (s, m), g in self.groups.items() if s == section}
            if not groups:
                continue
            if section in LIST_SECTIONS:
                show = lambda names, g=groups: [gr.update(visible=m in (names or [])) for m in g]  # noqa: E731
            else:
                show = lambda name, g=groups: [gr.update(visible=m == name) for m in g]  # noqa: E731
            selector.change(show, selector, list(groups.values()))

        def validate(values, start: bool = False):
            """Updates for ``outputs``, and the name of the run started (or None)."""
            by_id = dict(zip(ids, values))
            overrides = form.overrides(by_id)
            yaml_text, command = config_yaml(overrides), cli_command(overrides)
            problem, field, status = None, None, ""
            try:
                config = check(self.engine, overrides)
                problem, key = self._output_dir_problem(config)
                field = form.field_for_error(problem, by_id, key) if problem else None
            except TuneryError as exc:
                problem = str(exc)
                field = form.field_for_error(problem, by_id, getattr(exc, "config_key", None))
            if not problem:
                status = "The configuration is valid."
                if start:
                    run_dir = Path(config.output_dir)
                    runstate.start(run_dir, yaml_text)
                    status = f"Started **{run_dir.name}**: see the Runs page."
            updates: list[Any] = [gr.update(visible=bool(problem) and field is None,
                                            value=_error_html(problem) if problem and field is None else "")]
            updates += [gr.update(visible=field is not None and i == field.id,
                                  value=_error_html(problem) if field is not None and i == field.id else "")
                        for i in ids]
            wanted = self.field_accordion.get(field.id) if field else None
            updates += [gr.update(open=True) if name == wanted else gr.skip() for name in self.accordions]
            folder = Path(tempfile.mkdtemp(prefix="tunery-ui-"))
            (folder / "run.yaml").write_text(yaml_text)
            (folder / "run.sh").write_text(f"#!/bin/sh\n{command}\n")
            updates += [yaml_text, command, gr.update(value=str(folder / "run.yaml"), interactive=True),
                        gr.update(value=str(folder / "run.sh"), interactive=True),
                        status if not problem else "Not started: fix the error shown." if start else ""]
            return updates, (run_dir.name if start and not problem else None)

        check_btn.click(lambda *v: validate(v)[0], inputs, outputs, show_progress="hidden")
        self._start = (start_btn, validate, inputs, outputs)

    def _fresh_output_dir(self) -> str:
        return str(self.runs_dir / time.strftime("run-%Y%m%d-%H%M%S"))

    def _uploaded(self, file: str) -> str:
        """An uploaded data file is kept in RUNS/data/ and named in data.train."""
        source = Path(getattr(file, "name", file))
        target = self.runs_dir / "data" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        return str(target)

    def _output_dir_problem(self, config) -> tuple[str | None, str | None]:
        """The UI's own checks on output_dir: inside the runs folder, and not holding a run."""
        out = Path(config.output_dir)
        if not inside(out, self.runs_dir):
            return (f"config key 'output_dir': '{out}' is outside the runs folder {self.runs_dir} "
                    "(tunery ui --runs); choose a folder inside it so the Runs page shows the run"), "output_dir"
        if runstate.is_run(out):
            if runstate.state(out).status == "running":
                return f"output_dir '{out}' holds a running run; stop it first or choose another folder", "output_dir"
            if not config.overwrite:
                return (f"output_dir '{out}' already holds a run; tick overwrite (--overwrite) to replace it, "
                        "or choose another folder"), "output_dir"
        return None, None

    # ------------------------------------------------------------------ Runs

    def _run_names(self) -> list[str]:
        return [p.name for p in runstate.list_runs(self.runs_dir)]

    def _runs_page(self, demo: gr.Blocks) -> None:
        with gr.Row():
            self.run_select = gr.Dropdown(self._run_names(), value=None, label="run", elem_id="run-select", scale=3)
            refresh = gr.Button("Refresh", scale=1, size="sm")
        overview = gr.Dataframe(headers=["run", "status", "method", "model"], interactive=False,
                                elem_id="runs-table", label="runs")
        status = gr.Markdown(elem_id="run-status")
        with gr.Row():
            stop = gr.Button("Stop", variant="stop", elem_id="stop-button", interactive=False)
            resume = gr.Button("Resume", elem_id="resume-button", interactive=False)
        with gr.Row():
            plots = [gr.LinePlot(x="step", y="value", color="series", title=title, label=title,
                                 elem_id=f"plot-{key}", height=260, x_title="step", y_title=title)
                     for key, title in CURVES]
        evaluations = gr.Markdown(elem_id="run-evaluations")
        worst = gr.Markdown(elem_id="run-worst")
        with gr.Accordion("report.md", open=False):
            report = gr.Markdown(elem_id="run-report")
        with gr.Accordion("output of the training process", open=False):
            log = gr.Code(elem_id="run-log", interactive=False)
        signature = gr.State(None)
        outputs = [signature, overview, status, stop, resume, *plots, evaluations, worst, report, log]

        def show(name, previous=None):
            sig = self._signature(name)
            if sig == previous:
                return [gr.skip()] * len(outputs)
            return [sig, *self._run_view(name)]

        self.run_select.change(show, self.run_select, outputs, show_progress="hidden")
        refresh.click(lambda name: [gr.update(choices=self._run_names()), *show(name)], self.run_select,
                      [self.run_select, *outputs])
        gr.Timer(1.0).tick(show, [self.run_select, signature], outputs, show_progress="hidden")
        demo.load(lambda: gr.update(choices=self._run_names()), None, self.run_select)
        stop.click(lambda name: self._stop(name), self.run_select, status)
        resume.click(lambda name: self._resume(name), self.run_select, status)
        start_btn, validate, inputs, start_outputs = self._start

        def start(*values):
            updates, started = validate(values, start=True)
            if not started:
                return [*updates, gr.skip(), gr.skip()]
            return [*updates, gr.Tabs(selected="runs"), gr.update(choices=self._run_names(), value=started)]

        start_btn.click(start, inputs, [*start_outputs, self.tabs, self.run_select], show_progress="hidden")

    def _signature(self, name: str | None) -> tuple:
        names = self._run_names()
        overview = tuple((n, runstate.state(self.runs_dir / n).status) for n in names)
        if not name or name not in names:
            return (name, overview)
        path = self.runs_dir / name
        stamps = tuple((path / f).stat().st_mtime_ns if (path / f).exists() else 0
                       for f in ("train_log.jsonl", "metrics.json", runstate.LOG_FILE, runstate.PID_FILE))
        return (name, overview, runstate.state(path).summary(), stamps)

    def _overview(self) -> pd.DataFrame:
        rows = []
        for path in runstate.list_runs(self.runs_dir):
            config = runstate.config_of(path)
            method = config.get("method")
            rows.append([path.name, runstate.state(path).summary(),
                         method.get("name") if isinstance(method, dict) else method, config.get("model")])
        return pd.DataFrame(rows, columns=["run", "status", "method", "model"])

    def _run_view(self, name: str | None) -> list:
        empty = pd.DataFrame({"step": [], "value": [], "series": []})
        if not name or not (self.runs_dir / name).is_dir():
            return [self._overview(), "Pick a run.", gr.update(interactive=False), gr.update(interactive=False),
                    *[gr.LinePlot(value=empty, caption="no points") for _ in CURVES], "", "", "", ""]
        path = self.runs_dir / name
        st = runstate.state(path)
        curves = runstate.curves(runstate.train_log(path))
        plots = []
        for key, _ in CURVES:
            points = curves[key]
            frame = pd.DataFrame(points, columns=["step", "value", "series"]) if points else empty
            last = f", last step {points[-1][0]}" if points else ""
            plots.append(gr.LinePlot(value=frame, caption=f"{len(points)} points{last}"))
        metrics = runstate.read_json(path / "metrics.json") or {}
        text = f"**{name}**: {html.escape(st.summary())}"
        return [self._overview(), text,
                gr.update(interactive=st.status == "running"),
                gr.update(interactive=st.status in ("stopped", "incomplete") and st.resume_point is not None),
                *plots, _evaluations_md(metrics), _worst_md(path),
                _report_md(path), runstate.log_of_last_launch(path, 20000)[-20000:]]

    def _stop(self, name: str | None) -> str:
        if not name:
            return "Pick a run."
        if runstate.stop(self.runs_dir / name):
            return f"**{name}**: SIGTERM sent; tunery saves a checkpoint after this step and stops."
        return f"**{name}** is not running."

    def _resume(self, name: str | None) -> str:
        if not name:
            return "Pick a run."
        st = runstate.state(self.runs_dir / name)
        if st.status == "running" or not st.resume_point:
            return f"**{name}** cannot be resumed: {st.summary()}"
        runstate.resume(self.runs_dir / name)
        return f"**{name}**: resuming from {st.resume_point}."

    # ------------------------------------------------------------------ Try it

    def _finished(self) -> list[str]:
        return [p.name for p in runstate.list_runs(self.runs_dir) if runstate.state(p).status == "finished"]

    def _try_page(self, tab: gr.Tab) -> None:
        run = self.try_run = gr.Dropdown(self._finished(), value=None, label="finished run", elem_id="try-run")
        kind = gr.Markdown(elem_id="try-kind")
        with gr.Group(visible=True) as chat_group:
            chat = gr.Chatbot(label="generate (Engine.generate with the run's model)", elem_id="chat", height=300)
            with gr.Row():
                prompt = gr.Textbox(label="prompt", elem_id="chat-input", scale=4)
                send = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=1)
            with gr.Row():
                max_new = gr.Slider(1, 512, value=48, step=1, label="max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
                clear = gr.Button("Clear", size="sm")
        with gr.Group(visible=False) as reward_group:
            text = gr.Textbox(label="text to score (as `tunery score --format completion` scores it)", lines=4,
                              elem_id="score-input")
            score_btn = gr.Button("Score", variant="primary", elem_id="score-button")
            score = gr.Markdown(elem_id="score-output")
        tab.select(lambda: gr.update(choices=self._finished()), None, run)

        def pick(name):
            if not name:
                return "", gr.update(visible=True), gr.update(visible=False)
            reward = runstate.is_reward_run(self.runs_dir / name)
            what = "a reward model: score texts" if reward else "a language model: generate"
            return f"**{name}** is {what}.", gr.update(visible=not reward), gr.update(visible=reward)

        run.change(pick, run, [kind, chat_group, reward_group])

        def generate(name, message, history, max_new_tokens, temp):
            history = list(history or [])
            if not name:
                return history + [{"role": "assistant", "content": "Pick a finished run first."}], message
            try:
                output = self.engine.generate(str(self.runs_dir / name), [message], max_new_tokens=int(max_new_tokens),
                                              temperature=float(temp))[0]
            except TuneryError as exc:
                output = f"error: {exc}"
            return history + [{"role": "user", "content": message}, {"role": "assistant", "content": output}], ""

        send.click(generate, [run, prompt, chat, max_new, temperature], [chat, prompt])
        prompt.submit(generate, [run, prompt, chat, max_new, temperature], [chat, prompt])
        clear.click(lambda: [], None, chat)
        score_btn.click(lambda name, t: self._score(name, t), [run, text], score)

    def _score(self, name: str | None, text: str) -> str:
        if not name:
            return "Pick a finished reward run first."
        import torch

        try:
            loaded = self.engine.load(str(self.runs_dir / name))
        except TuneryError as exc:
            return _error_html(str(exc))
        batch = loaded.tokenizer(text, return_tensors="pt", truncation=True, max_length=loaded.config.data.max_length)
        batch = {k: v.to(next(loaded.model.parameters()).device) for k, v in batch.items()}
        with torch.no_grad():
            value = float(loaded.model(**batch).logits[0, 0])
        return f"reward score: **{value:.4f}**"

    # ------------------------------------------------------------------ Compare

    def _compare_page(self, tab: gr.Tab) -> None:
        with gr.Row():
            chosen = self.compare_runs = gr.Dropdown(self._run_names(), value=[], multiselect=True, label="runs to compare (two or more)",
                                 elem_id="compare-runs", scale=3)
            only_diff = gr.Checkbox(value=False, label="only differences", scale=1)
            button = gr.Button("Compare", variant="primary", elem_id="compare-button", scale=1)
        metrics = gr.HTML(elem_id="compare-metrics", elem_classes=["tunery-table"])
        loss = gr.LinePlot(x="step", y="value", color="series", title="train loss", elem_id="compare-loss", height=260)
        configs = gr.HTML(elem_id="compare-config", elem_classes=["tunery-table"])
        tab.select(lambda: gr.update(choices=self._run_names()), None, chosen)
        button.click(self._compare, [chosen, only_diff], [metrics, loss, configs])
        only_diff.change(self._compare, [chosen, only_diff], [metrics, loss, configs])

    def _compare(self, names: list[str] | None, only_diff: bool):
        names = list(names or [])
        if len(names) < 2:
            return "<p>Pick two or more runs.</p>", gr.skip(), ""
        paths = [self.runs_dir / n for n in names]
        metric_rows: dict[str, list] = {}
        for i, path in enumerate(paths):
            m = runstate.read_json(path / "metrics.json") or {}
            for phase in ("train", "before", "after"):
                for key, value in runstate.numbers(m.get(phase)).items():
                    metric_rows.setdefault(f"{phase}: {key}", [None] * len(paths))[i] = value
        points = []
        for name, path in zip(names, paths):
            points += [(s, v, name) for s, v, series in runstate.curves(runstate.train_log(path))["loss"]
                       if series == "train"]
        config_rows: dict[str, list] = {}
        for i, path in enumerate(paths):
            for key, value in runstate.flatten(runstate.config_of(path)).items():
                config_rows.setdefault(key, [None] * len(paths))[i] = value
        frame = pd.DataFrame(points, columns=["step", "value", "series"])
        return (_table("metric", names, metric_rows, False, _fmt),
                gr.LinePlot(value=frame, caption=f"{len(names)} runs"),
                _table("config key", names, config_rows, only_diff, lambda v: "" if v is None else str(v)))


# ---------------------------------------------------------------------- rendering helpers


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(first: str, names: list[str], rows: dict[str, list], only_diff: bool, fmt) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for key, values in rows.items():
        differ = len({repr(v) for v in values}) > 1
        if only_diff and not differ:
            continue
        cells = "".join(f"<td>{html.escape(fmt(v))}</td>" for v in values)
        body.append(f'<tr class="{"diff" if differ else "same"}"><td>{html.escape(key)}</td>{cells}</tr>')
    return f"<table><tr><th>{html.escape(first)}</th>{head}</tr>{''.join(body)}</table>"


def _md_cell(value: Any) -> str:
    text = _fmt(value) if not isinstance(value, str) else value
    return html.escape(text.replace("\n", " ⏎ ")).replace("|", "\\|")[:200]


def _evaluations_md(metrics: dict) -> str:
    if not metrics:
        return ""
    before, after = runstate.numbers(metrics.get("before")), runstate.numbers(metrics.get("after"))
    lines = ["#### Evaluations", "", "| metric | before | after | change |", "|---|---|---|---|"]
    for key in dict.fromkeys([*before, *after]):
        a, b = before.get(key), after.get(key)
        change = _fmt(b - a) if a is not None and b is not None else "-"
        lines.append(f"| {key} | {_fmt(a)} | {_fmt(b)} | {change} |")
    during = metrics.get("during") or []
    if during:
        keys = [k for k in runstate.numbers(during[0]) if k != "step"]
        lines += ["", "During training:", "", "| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {d.get('step')} | " + " | ".join(_fmt(d.get(k)) for k in keys) + " |" for d in during]
    train = metrics.get("train") or {}
    lines += ["", f"Trained {train.get('steps')} steps in {train.get('seconds')} s, final loss {_fmt(train.get('loss'))}, "
              f"{train.get('tokens_per_s')} tokens/s."]
    return "\n".join(lines)


def _worst_md(path: Path) -> str:
    details = runstate.read_json(path / "evaluations" / "after.json") or {}
    out = []
    for evaluator, result in details.items():
        worst = (result or {}).get("worst") or []
        if not worst:
            continue
        keys = list(dict.fromkeys(k for row in worst for k in row))
        out += [f"#### Worst examples: {evaluator} (after training)", "",
                "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        out += ["| " + " | ".join(_md_cell(row.get(k)) for k in keys) + " |" for row in worst]
        out.append("")
    return "\n".join(out)


def _report_md(path: Path) -> str:
    try:
        text = (path / "report.md").read_text()
    except OSError:
        return "No report yet (written when the run finishes)."
    return "\n".join(line for line in text.splitlines() if not line.startswith("!["))  # images: the curves above


def serve(engine, runs_dir: str | Path, host: str, port: int) -> None:
    """Build the app and serve it until interrupted."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    demo = App(engine, runs_dir).build()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, ssr_mode=False, quiet=True, show_error=True, css=CSS, theme=theme,
        allowed_paths=[str(Path(runs_dir).resolve())], footer_links=[],
    )
