"""The settings recorded with the deployment (see `mlflow_gcp.remembered`), the resource of the settings step:
written last, once everything it describes is applied; shown by status; kept by `down` with the data."""

from __future__ import annotations

from mlflow_gcp.engine.base import StepContext
from mlflow_gcp.remembered import SETTINGS_SECRET, document, parse, recorded_names
from mlflow_gcp.resources.secret import Secret, SecretState


class SettingsRecord(Secret):
    """One JSON document per version; a new version only when a recorded value changes. No IAM binding: the
    server's service account never reads it."""

    kind = "settings record"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, SETTINGS_SECRET, lambda: document(ctx.settings), follow=True)

    def drift(self, current: SecretState) -> list[str]:
        if current.value is None:
            return ["version"]
        recorded = parse(current.value)
        return [n for n in recorded_names() if recorded.get(n, object()) != getattr(self.ctx.settings, n)]

    def details(self, current: SecretState) -> dict[str, str]:
        return {"version": current.version or "none"}
