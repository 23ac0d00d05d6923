"""`mlflow-gcp up`: every step, each as soon as its inputs are ready."""

from __future__ import annotations

from mlflow_gcp.cli.apply import apply_command
from mlflow_gcp.steps import STEPS

up = apply_command(
    [step.name for step in STEPS],
    "Create or update the whole deployment. Safe to rerun: what exists and matches is left alone.",
    whole=True,
)
