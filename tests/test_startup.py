"""Start-up (issue 25): `--help` loads no Google library, and a run builds only the command it names; the others
keep their name and help. The figures are in benchmarks/startup_bench.py (no timed test)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import typer.main

from mlflow_gcp.cli import app
from mlflow_gcp.cli.lazy import for_argv

PROBE = """
import io, sys, contextlib
sys.argv = ["mlflow-gcp", *sys.argv[1:]]
try:
    with contextlib.redirect_stdout(io.StringIO()):
        from mlflow_gcp.cli import main
        main()
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.split(".")[0] in ("google", "googleapiclient", "grpc", "httplib2")))
"""


def test_help_imports_no_google_module(tmp_path):
    for args in (["--help"], ["up", "--help"], ["credentials", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", (args, done.stdout)


def names_and_help(group) -> dict[str, str]:
    return {name: command.get_short_help_str() for name, command in group.commands.items()}


def test_the_named_command_is_whole_and_the_others_keep_name_and_help():
    full = typer.main.get_command(app)
    lean = typer.main.get_command(for_argv(app, ["up", "--project", "p", "--help"]))
    assert names_and_help(lean) == names_and_help(full)
    assert [p.name for p in lean.commands["up"].params] == [p.name for p in full.commands["up"].params]
    assert [p.name for p in lean.commands["status"].params] == []
    deep = typer.main.get_command(for_argv(app, ["step", "apis"]))
    assert names_and_help(deep.commands["step"]) == names_and_help(full.commands["step"])
    assert len(deep.commands["step"].commands["apis"].params) == len(full.commands["step"].commands["apis"].params)
    assert deep.commands["step"].commands["network"].params == []


def help_text(run, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    try:
        run()
    except SystemExit as exit:
        assert exit.code in (0, None)
    return capsys.readouterr().out


def test_a_command_s_help_printed_by_it_alone_is_the_same(monkeypatch, capsys):
    from mlflow_gcp.cli import lazy, main

    monkeypatch.setattr(lazy, "_program_name", lambda: "mlflow-gcp")  # pytest's __main__ would name itself
    for path in (["up"], ["step"], ["step", "apis"], ["credentials"], ["users", "add"]):
        monkeypatch.setattr(sys, "argv", ["mlflow-gcp", *path, "--help"])
        fast = help_text(main, monkeypatch, capsys)
        whole = help_text(functools.partial(app, [*path, "--help"], prog_name="mlflow-gcp"), monkeypatch, capsys)
        assert fast == whole, path
        assert f"Usage: {' '.join(['mlflow-gcp', *path])} " in fast
