"""Step `settings`: the settings this run applied, recorded with the deployment (see `mlflow_gcp.remembered`).
It runs after the deploy step, so a run that failed records nothing and its next run tries the same again."""

from __future__ import annotations

from collections.abc import Iterator

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.resources.settings_record import SettingsRecord


def resources(ctx: StepContext) -> Iterator[Resource]:
    yield SettingsRecord(ctx)
