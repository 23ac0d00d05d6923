"""The settings record's document: one JSON document per version of the secret `mlflow-gcp-settings`, what it
holds and how it is read back. Pure: the secret is read by `resources.settings_record`, the settings of a run are
resolved from it by `remembered`."""

from __future__ import annotations

import json
from typing import Any

from mlflow_gcp import __version__
from mlflow_gcp.config import Settings, flag, setting_fields
from mlflow_gcp.errors import MlflowGcpError

SETTINGS_SECRET = "mlflow-gcp-settings"
FORMAT = 1
# The project is where the record is looked for, so it is never taken from it.
NOT_RECORDED = ("project",)


def recorded_names() -> list[str]:
    return [f.name for f in setting_fields() if f.name not in NOT_RECORDED]


def document(settings: Settings) -> str:
    values = {name: getattr(settings, name) for name in recorded_names()}
    return json.dumps({"format": FORMAT, "written_by": f"mlflow-gcp {__version__}", "settings": values}, indent=2)


def parse(text: str, version: str = "latest") -> dict[str, Any]:
    """The recorded values of known settings, typed as the dataclass says. Unknown names (a newer tool's, or
    removed settings) are ignored; a value of the wrong type is a clear error."""
    try:
        values = json.loads(text)["settings"]
        if not isinstance(values, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError) as e:
        raise MlflowGcpError(
            f"Version {version} of the secret {SETTINGS_SECRET} (the settings recorded with the deployment) is not a "
            "settings document. Nothing was changed: the tool does not fall back to default names.",
            f"Add a corrected version (`gcloud secrets versions add {SETTINGS_SECRET} --data-file=FILE`; an earlier "
            f"version is `gcloud secrets versions access N --secret {SETTINGS_SECRET}`), then run the command again.",
        ) from e
    types = {f.name: f.type for f in setting_fields()}
    out: dict[str, Any] = {}
    for name in recorded_names():
        if name not in values:
            continue
        value = values[name]
        wanted = int if types[name] in (int, "int") else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise MlflowGcpError(
                f"The setting {name} recorded in the secret {SETTINGS_SECRET} is {value!r}, not a {wanted.__name__}.",
                f"Run `mlflow-gcp up {flag(name)} VALUE` to record a good value.",
            )
        out[name] = value
    return out
