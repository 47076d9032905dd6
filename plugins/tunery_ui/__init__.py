"""``tunery ui``: a local web app to start, watch, try and compare runs (``pip install 'tunery[ui]'``).

This module only adds the command; Gradio is imported when the command runs.
"""

from __future__ import annotations

from tunery import PluginError, hookimpl

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@hookimpl
def tunery_register_commands(cli):
    import click

    @cli.command()
    @click.option("--port", type=int, default=7860, show_default=True, help="Port to serve on.")
    @click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
                  help="Folder of the runs to show; new runs go inside it.")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to bind; anything but the loopback address exposes the UI to your network.")
    @click.pass_context
    def ui(ctx, port, runs_dir, host):
        """Serve a browser UI to start, watch, try and compare runs (needs `pip install 'tunery[ui]'`)."""
        from tunery import command_engine

        try:
            import gradio  # noqa: F401 - only to say clearly when it is missing
        except ImportError:
            raise PluginError("tunery ui needs Gradio, which is not installed: pip install 'tunery[ui]'") from None
        if host not in LOOPBACK:
            click.echo(f"warning: serving on {host}: anyone who can reach this address can start training runs and "
                       "read the run folders (there is no login); use the default 127.0.0.1 to keep it local", err=True)
        engine = command_engine(ctx)
        from .app import serve

        click.echo(f"tunery ui: http://{'[' + host + ']' if ':' in host else host}:{port}  "
                   f"(runs in {runs_dir}; Ctrl-C to stop)", err=True)
        try:
            serve(engine, runs_dir, host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve on {host}:{port}: {exc}; choose another --port") from None
