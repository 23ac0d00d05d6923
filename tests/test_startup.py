"""Start-up (issue 25): `--help` loads neither a Google library nor a command's module, Rich's console nor
pydantic; a command's module loads when that command is named. The figures are in benchmarks/startup_bench.py (no
timed test)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from mlflow_gcp.cli import Root, app
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup, summary
from mlflow_gcp.cli.lazy import build

PROBE = """
import io, json, sys, contextlib
sys.argv = ["mlflow-gcp", *sys.argv[1:]]
try:
    with contextlib.redirect_stdout(io.StringIO()):
        from mlflow_gcp.cli import main
        main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""
GOOGLE = ("google", "googleapiclient", "grpc", "httplib2")
# Typer's Rich help (Markdown, tracebacks) and its pydantic coercion of parameters: no help needs them.
NEVER_FOR_HELP = ("typer.rich_utils", "rich.markdown", "rich.traceback", "pydantic", "markdown_it", "pygments")


def modules_after(*args: str, tmp_path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def loaded(modules: set[str], prefixes) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m in prefixes)


@pytest.mark.parametrize(
    "args", [["--help"], ["up", "--help"], ["credentials", "--help"], ["step", "apis", "--help"]], ids=" ".join
)
def test_help_imports_no_google_module_nor_rich_help_nor_pydantic(args, tmp_path):
    modules = modules_after(*args, tmp_path=tmp_path)
    assert loaded(modules, GOOGLE) == []
    assert [m for m in modules if m.startswith(NEVER_FOR_HELP)] == []


def test_the_command_list_imports_no_command_module_nor_the_settings(tmp_path):
    modules = modules_after("--help", tmp_path=tmp_path)
    commands = {f"mlflow_gcp.cli.{entry.target.split(':')[0]}" for entry in Root.entries}
    assert sorted(commands & modules) == []
    assert [m for m in ("mlflow_gcp.config", "mlflow_gcp.steps", "rich.console") if m in modules] == []
    up = modules_after("up", "--help", tmp_path=tmp_path)
    assert "mlflow_gcp.cli.up" in up and "mlflow_gcp.cli.status" not in up


def test_each_registered_summary_and_panel_is_the_command_s_own():
    """The root group lists its commands from Root.entries without importing them: what it says must be what
    the command itself says."""
    for entry in Root.entries:
        command = build(entry)
        assert command.name == entry.name
        assert " ".join(summary(command).split()) == entry.summary, entry.name
        assert command.rich_help_panel == entry.panel


def every_command(command, path=()):
    yield path, command
    for name in getattr(command, "list_commands", lambda ctx: [])(None):
        yield from every_command(command.get_command(None, name), (*path, name))


def test_every_command_groups_its_help_in_sections():
    """Each command and group is built with the classes that write the sections (cls=PanelCommand/PanelGroup)."""
    commands = list(every_command(typer.main.get_command(app)))
    assert len(commands) > 20
    for path, command in commands:
        assert isinstance(command, PanelGroup if hasattr(command, "list_commands") else PanelCommand), path


def help_text(run, monkeypatch, capsys) -> str:
    try:
        run()
    except SystemExit as exit:
        assert exit.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", ["80", "120"])
def test_a_command_s_help_printed_by_it_alone_is_the_same(monkeypatch, capsys, columns):
    from mlflow_gcp.cli import lazy, main

    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(lazy, "program_name", lambda: "mlflow-gcp")  # pytest's __main__ would name itself
    for path in (["up"], ["step"], ["step", "apis"], ["credentials"], ["users", "add"], ["backup", "list"]):
        monkeypatch.setattr(sys, "argv", ["mlflow-gcp", *path, "--help"])
        fast = help_text(main, monkeypatch, capsys)
        whole = help_text(functools.partial(app, [*path, "--help"], prog_name="mlflow-gcp"), monkeypatch, capsys)
        assert fast == whole, path
        assert f"Usage: {' '.join(['mlflow-gcp', *path])} " in fast


def test_a_command_registered_the_usual_way_is_listed_and_runs():
    """A command added with `@app.command()` (not to Root.entries) is not lost: listed and found."""
    extra = typer.Typer(cls=Root, rich_markup_mode=None)
    extra.callback()(lambda: None)
    extra.command("hello", cls=PanelCommand, rich_help_panel="Look")(lambda: print("hi"))
    group = typer.main.get_command(extra)
    assert group.list_commands(None)[-1] == "hello"
    result = CliRunner().invoke(extra, ["--help"])
    assert "hello" in result.stdout.split("Look:")[1]
    assert CliRunner().invoke(extra, ["hello"]).stdout == "hi\n"
