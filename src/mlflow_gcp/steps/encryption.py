"""Cloud SQL accepts only encrypted connections (`sslMode: ENCRYPTED_ONLY`), switched on once the server uses TLS.

Order matters on an existing deployment: the server is told the instance's CA first (in `mlflow-env`, by the
secrets step) and rolled out (deploy step); only then does the instance refuse unencrypted connections, so the
running server never loses its database. A new instance is created encrypted-only from the start (database step),
and relaxing goes the other way round (database step, before the server changes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.config import ENCRYPTED_ONLY, SECRET_ENV
from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.service_spec import DB_CA_SETTING
from mlflow_gcp.steps.sql_calls import UPDATE_TIMEOUT, SqlCalls


@dataclass(frozen=True)
class SslState:
    ssl_mode: str
    instance: dict[str, Any]


class EncryptedConnections(Resource):
    kind = "Cloud SQL encryption of"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.db_instance)
        self.sql = SqlCalls(ctx)

    def read(self) -> SslState | None:
        from google.api_core import exceptions as gexc

        try:
            instance = self.sql.read(lambda api: api.instances().get(project=self.ctx.project, instance=self.name))
        except gexc.NotFound:
            return None  # the database step creates it with the SSL mode of the settings
        ssl_mode = instance.get("settings", {}).get("ipConfiguration", {}).get("sslMode", "")
        return SslState(ssl_mode or "ALLOW_UNENCRYPTED_AND_ENCRYPTED", instance)

    def drift(self, current: SslState) -> list[str]:
        wanted = self.ctx.settings.db_ssl_mode == ENCRYPTED_ONLY
        return ["sslMode"] if wanted and current.ssl_mode != ENCRYPTED_ONLY else []

    def details(self, current: SslState) -> dict[str, str]:
        return {"ssl": current.ssl_mode.lower().replace("_", " ")}

    def create(self) -> None:
        """Nothing to do: a new instance is created with the SSL mode of the settings."""

    def update(self, current: SslState, fields: list[str]) -> None:
        self._check_server_uses_tls()
        ip = dict(current.instance.get("settings", {}).get("ipConfiguration", {}))
        ip["sslMode"] = ENCRYPTED_ONLY
        ip.pop("requireSsl", None)  # legacy field; sslMode decides
        self.sql.write(
            lambda api: api.instances().patch(
                project=self.ctx.project, instance=self.name, body={"settings": {"ipConfiguration": ip}}
            ),
            f"Requiring encrypted connections on the Cloud SQL instance {self.name}",
            UPDATE_TIMEOUT,
        )

    def _check_server_uses_tls(self) -> None:
        """The server deployed in this run reads the CA from the mlflow-env version it pins; without it, requiring
        encryption would cut the server off its database."""
        self.ctx.output("service.url", "deploy")
        version = self.ctx.output(f"secret_version.{SECRET_ENV}", "secrets")
        name = f"projects/{self.ctx.project}/secrets/{SECRET_ENV}/versions/{version}"
        client = self.ctx.clients.secrets()
        payload = self.ctx.call("secretmanager", lambda: client.access_secret_version(name=name)).payload.data
        if f"\n{DB_CA_SETTING}=" not in "\n" + payload.decode("utf-8", "replace"):
            raise MlflowGcpError(
                f"The server does not connect to the database with TLS yet (version {version} of {SECRET_ENV} has "
                f"no {DB_CA_SETTING}), so the Cloud SQL instance {self.name} was left accepting unencrypted "
                "connections.",
                "Run `mlflow-gcp up` again: it gives the server the instance's CA first. If the instance has no "
                "server CA certificate, pass --db-ssl-mode ALLOW_UNENCRYPTED_AND_ENCRYPTED.",
            )


def resources(ctx: StepContext) -> Iterator[Resource]:
    yield EncryptedConnections(ctx)
