"""The `harness` command. Each subcommand lives in its own module; this file only wires them up."""

from __future__ import annotations

import typer

from harness import __version__
from harness.cli.common import err
from harness.cli import analysis, demo, devices, farm, measure, models, predict, results, sim, spaces, transfer



def _no_type_for_flags() -> None:
    """typer labels on/off flags `<bool>` in --help; a flag takes no value, so show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)  # a typer internal: absent in other versions
    if shown is None or getattr(shown, "_harness", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._harness = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_for_flags()


app = typer.Typer(
    name="harness",
    help="On-device latency measurement for hardware-aware NAS: profiles, campaigns, results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(devices.app, name="devices")
app.add_typer(sim.app, name="sim")
app.add_typer(farm.app, name="farm")
app.command("measure")(measure.measure)
app.command("export")(results.export)
app.command("campaigns")(results.campaigns)
app.command("backup")(results.backup)
app.command("spaces")(spaces.spaces)
app.command("models")(models.models)
app.command("import")(analysis.import_)
app.command("srcc")(analysis.srcc)
app.command("compare")(analysis.compare)
app.command("proxy")(analysis.proxy)
app.command("report")(analysis.report)
app.command("train")(predict.train)
app.command("suggest")(predict.suggest)
app.command("adapt")(predict.adapt)
app.command("predict")(predict.predict)
app.command("pareto")(predict.pareto)
app.command("demo")(demo.demo)
app.command("transfer")(transfer.transfer)
app.command("search")(transfer.search)


def _reflow(text: str) -> str:
    """A docstring's paragraphs as single lines: typer keeps the source's line breaks in --help (ragged lines at
    any width but the source's); rich then wraps each paragraph to the terminal."""
    import re

    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()))


def _reflow_help(typer_app: typer.Typer) -> None:
    import inspect

    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and inspect.getdoc(info.callback):
            info.help = _reflow(inspect.getdoc(info.callback))
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def _version(value: bool) -> None:
    if value:
        from harness.cli.common import quiet_broken_pipe

        try:
            print(f"harness {__version__}", flush=True)
        except BrokenPipeError:
            quiet_broken_pipe()
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """On-device latency measurement for hardware-aware NAS."""


def main() -> None:
    import sys

    from harness import interrupts

    if interrupts.started():  # Ctrl-C while harness was starting
        err.print("[yellow]interrupted[/] while starting; nothing was done.")
        sys.exit(130)
    from rich.console import Console

    from harness.cli.common import after_ctrl_c, quiet_broken_pipe, say_interrupted

    # rich ends a command whose reader left with exit 1 (as `measure`'s "a device stopped"): every console of the
    # CLI (typer's --help too) ends it as a shell tool killed by SIGPIPE does instead. Here, not at import: a
    # notebook importing harness.cli keeps rich's behaviour.
    Console.on_broken_pipe = lambda self: quiet_broken_pipe()  # type: ignore[method-assign]

    try:
        app()
    except BrokenPipeError:
        quiet_broken_pipe()
    except KeyboardInterrupt:
        say_interrupted("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception:
        if not after_ctrl_c():
            raise
        say_interrupted("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit as e:  # typer turns a Ctrl-C outside our handlers into a silent exit 130
        if e.code == 130:
            say_interrupted("[yellow]interrupted[/]")
        raise
