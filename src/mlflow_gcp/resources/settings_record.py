"""The settings recorded with the deployment (see `mlflow_gcp.remembered`): the resource of the settings step,
written last, once everything it describes is applied; shown by status; kept by `down` with the data. And its
newest version, read (the document's format is `mlflow_gcp.settings_document`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.engine.base import StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.resources.secret import Secret, SecretState, decode_payload
from mlflow_gcp.settings_document import SETTINGS_SECRET, document, parse, recorded_names


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


@dataclass(frozen=True)
class Record:
    values: dict[str, Any]
    version: str


def read_record(clients, project: str) -> Record | None:
    """The newest recorded settings, read by version number, or None: no record yet (no secret, or a secret with
    no version: a first run stopped between the two), or Secret Manager not enabled yet (a new project).

    Never through `latest`: that alias is eventually consistent and may answer the version before the newest
    (https://cloud.google.com/secret-manager/docs/reference/consistency), which would send a setting back and
    forth. The list of versions is eventually consistent too, so the numbers above the newest listed are read one
    by one (a read by number is strongly consistent) until one does not exist. A newest version that is disabled
    or destroyed is an error that says how to recover: the settings are never guessed from an older version or
    from the defaults."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp import retry
    from mlflow_gcp.gcp.errors import translate

    path = f"projects/{project}/secrets/{SETTINGS_SECRET}"
    client = clients.secrets()
    try:
        listed = retry.call(lambda: list(client.list_secret_versions(request={"parent": path})))
        states = {int(v.name.rsplit("/", 1)[-1]): v.state.name for v in listed}
        number = max(states, default=0) + 1
        while True:
            try:
                name = f"{path}/versions/{number}"
                version = retry.call(lambda name=name: client.get_secret_version(name=name))
            except gexc.NotFound:
                break
            states[number] = version.state.name
            number += 1
        if not states:
            return None
        newest = max(states)
        if states[newest] != "ENABLED":
            raise record_unreadable(project, newest, states)
        response = retry.call(lambda: client.access_secret_version(name=f"{path}/versions/{newest}"))
    except gexc.NotFound:
        return None  # no secret: nothing recorded (a deployment without one is recognised from its resources)
    except gexc.GoogleAPICallError as e:
        if retry.is_service_activating(e):
            return None
        raise translate(e, f"reading the recorded settings ({SETTINGS_SECRET})", project) from e
    text = decode_payload(SETTINGS_SECRET, str(newest), response.payload.data)
    return Record(parse(text, str(newest)), str(newest))


def record_unreadable(project: str, newest: int, states: Mapping[int, str]) -> MlflowGcpError:
    """The newest version of the record is disabled or destroyed: how to get the deployment's settings back."""
    state = states[newest].lower()
    older = sorted((n for n, s in states.items() if s == "ENABLED"), reverse=True)
    secret = f"--secret {SETTINGS_SECRET} --project {project}"
    if state == "disabled":
        hint = f"Enable it again (`gcloud secrets versions enable {newest} {secret}`) and run the command again."
    elif older:
        hint = (
            f"If version {older[0]} still describes the live deployment, add it back as the newest "
            f"(`gcloud secrets versions access {older[0]} {secret} | gcloud secrets versions add {SETTINGS_SECRET} "
            f"--project {project} --data-file=-`); otherwise add a corrected version the same way."
        )
    else:
        hint = (
            f"Delete the secret (`gcloud secrets delete {SETTINGS_SECRET} --project {project}`) and run `up` with the "
            "deployment's names as flags (--db-instance, --bucket, --service...): it is recognised from its "
            "resources and the record is written again."
        )
    return MlflowGcpError(
        f"The newest version ({newest}) of the secret {SETTINGS_SECRET}, the settings recorded with the deployment, "
        f"is {state}: the tool does not guess the deployment's settings from an older version or from the "
        "defaults (that could build a second, empty deployment). Nothing was changed.",
        hint,
    )
