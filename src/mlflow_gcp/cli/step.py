"""`mlflow-gcp step NAME`: one setup step (its prerequisites are read, not changed)."""

from __future__ import annotations

import typer

from mlflow_gcp.cli.apply import apply_command
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup
from mlflow_gcp.steps import BY_NAME, COMMAND_STEPS

app = typer.Typer(cls=PanelGroup, help="Run one setup step. Steps it needs must have run before.", no_args_is_help=True)

for _name in COMMAND_STEPS:
    app.command(_name, cls=PanelCommand)(apply_command(COMMAND_STEPS[_name], BY_NAME[_name].summary + "."))
