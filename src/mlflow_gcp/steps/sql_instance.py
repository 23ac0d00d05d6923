"""The Cloud SQL instance of the database step: its wanted settings, what changing each does (a restart, an
in-place upgrade, impossible), its states (waited out, or refused with what to do), and its deletion."""

from __future__ import annotations

import base64
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.config import ENCRYPTED_ONLY, SECRET_MYSQL
from mlflow_gcp.engine.base import PENDING, Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, NameTakenError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.gcp.operations import settled
from mlflow_gcp.labels import deployment_labels, lacks_labels, schema_version, with_labels
from mlflow_gcp.resources.password_secret import PasswordSecret, require_target
from mlflow_gcp.resources.secret import split_credentials
from mlflow_gcp.steps.network import network_link
from mlflow_gcp.steps.sql_calls import CREATE_TIMEOUT, UPDATE_TIMEOUT, SqlCalls

WAIT_STATES = ("PENDING_CREATE", "MAINTENANCE")

# What changing each owned field of the instance does. Cloud SQL restarts the instance for a new tier
# (machine type), an edition change and turning binary logging on or off; deletion protection and public IP
# change without a restart (https://cloud.google.com/sql/docs/mysql/instance-settings, "Impact of changing
# instance settings"). A major version upgrade is an in-place patch of databaseVersion with downtime
# (https://cloud.google.com/sql/docs/mysql/upgrade-major-db-version-inplace); there is no downgrade.
RESTART = Effect(Impact.RESTART, "restarts the database for a few minutes")
INSTANCE_EFFECTS = {
    "tier": RESTART,
    "edition": RESTART,
    "backupConfiguration": Effect(Impact.RESTART, "binary logging: restarts the database for a few minutes"),
    "privateNetwork": Effect(Impact.IMPOSSIBLE, "an instance cannot move to another network"),
}
UPGRADE = Effect(Impact.RESTART, "upgrades MySQL in place: the database is down for several minutes")
DOWNGRADE = Effect(Impact.IMPOSSIBLE, "MySQL cannot be downgraded")
# Output: the MLflow version whose schema the instance's databases hold, as its label records it ("" when none).
SCHEMA_OUTPUT = "database.mlflow_schema"


def version_key(version: str) -> tuple[int, ...]:
    """`MYSQL_8_0_31` -> (8, 0, 31), so versions compare in order."""
    return tuple(int(part) for part in version.split("_")[1:] if part.isdigit())


def network_of(link: str) -> tuple[str, str]:
    """(project, network) of `projects/P/global/networks/N`, with or without the compute URL prefix."""
    index = link.find("projects/")
    parts = (link[index:] if index >= 0 else link).strip("/").split("/")
    if len(parts) >= 5:
        return parts[1], parts[4]
    return "", parts[-1]


def same_network(live: str, wanted: str) -> bool:
    live_project, live_name = network_of(live)
    project, name = network_of(wanted)
    # Cloud SQL may answer with the project number where we sent the id: compare ids only when both are ids.
    projects_match = live_project == project or live_project.isdigit() or project.isdigit()
    return live_name == name and projects_match


class Instance(Resource):
    kind = "Cloud SQL instance"
    holds_data = True
    effects = INSTANCE_EFFECTS

    def __init__(self, ctx: StepContext, sql: SqlCalls, secret: PasswordSecret | None = None) -> None:
        super().__init__(ctx, ctx.settings.db_instance)
        self.sql = sql
        self.secret = secret
        self.network = network_link(ctx)
        self.missing: bool | None = None  # known after read(): children of a missing instance are not read
        self.state: str | None = None

    # -- desired state ------------------------------------------------------------------------------------
    def desired_settings(self) -> dict[str, Any]:
        s = self.ctx.settings
        return {
            "tier": s.db_tier,
            "edition": s.db_edition,
            "ipConfiguration": {"ipv4Enabled": False, "privateNetwork": self.network, "sslMode": s.db_ssl_mode},
            "backupConfiguration": {"enabled": True, "binaryLogEnabled": True},
            "deletionProtectionEnabled": True,
            "storageAutoResize": True,
            "userLabels": deployment_labels(s),
        }

    def _get(self) -> dict | None:
        try:
            return self.sql.read(lambda api: api.instances().get(project=self.ctx.project, instance=self.name))
        except gexc.NotFound:
            return None

    def read(self) -> dict | None:
        current = settled(
            self._get,
            busy=lambda i: i.get("state") in WAIT_STATES,
            what=f"Waiting for the Cloud SQL instance {self.name}",
            timeout=CREATE_TIMEOUT,
            wait_now=not self.ctx.dry_run,
            on_wait=lambda i: self.ctx.log(f"waiting for the Cloud SQL instance {self.name} ({i['state']})"),
        )
        self.missing = current is None
        if current is not None:
            self.state = current.get("state")
            if not self.ctx.dry_run:  # planning: `status` marks the state, `--dry-run` predicts the refusal
                self._check_state(current)
        return current

    def problem(self, current: dict | None) -> MlflowGcpError | None:
        return self._state_error(current) if current is not None else None

    def _check_state(self, current: dict) -> None:
        error = self._state_error(current)
        if error is not None:
            raise error

    def readable(self) -> bool:
        """Whether its databases and users can be read: not when it is missing, nor while planning on an
        instance that is not running (Cloud SQL answers 400 then)."""
        if self.missing:
            return False
        return not (self.ctx.dry_run and self.state not in (None, "RUNNABLE"))

    def unreadable_children(self) -> str:
        """Why its databases and users could not be read ("" when they could, or when it does not exist)."""
        if self.missing or self.readable():
            return ""
        return f"the Cloud SQL instance {self.name} is {self.state}"

    def _state_error(self, current: dict) -> MlflowGcpError | None:
        state = current.get("state", "")
        if state == "FAILED":
            return MlflowGcpError(
                f"The Cloud SQL instance {self.name} is in the FAILED state.",
                f"See its operations (`gcloud sql operations list --instance {self.name}`); delete it and run "
                "again, or pass --db-instance with another name.",
            )
        if state == "SUSPENDED":
            return MlflowGcpError(
                f"The Cloud SQL instance {self.name} is suspended (billing problem or policy violation).",
                "Check the project's billing account, then retry.",
            )
        if state == "STOPPED":
            return MlflowGcpError(
                f"The Cloud SQL instance {self.name} is stopped: the MLflow server cannot reach its database, and its "
                "databases and users cannot be read.",
                f"Start it (`gcloud sql instances patch {self.name} --activation-policy=ALWAYS`) and run again.",
            )
        if state == "PENDING_DELETE":
            return NameTakenError(
                f"The Cloud SQL instance {self.name} is being deleted; its name stays reserved for about a week.",
                "Pass --db-instance with another name.",
            )
        return None

    def drift(self, current: dict) -> list[str]:
        s = self.ctx.settings
        live = current.get("settings", {})
        ip = live.get("ipConfiguration", {})
        backups = live.get("backupConfiguration", {})
        fields = []
        if current.get("databaseVersion") != s.db_version:
            fields.append("databaseVersion")
        if live.get("tier") != s.db_tier:
            fields.append("tier")
        if live.get("edition", "ENTERPRISE") != s.db_edition:
            fields.append("edition")
        if live.get("deletionProtectionEnabled") is not True:
            fields.append("deletionProtectionEnabled")
        if backups.get("enabled") is not True or backups.get("binaryLogEnabled") is not True:
            fields.append("backupConfiguration")
        if ip.get("ipv4Enabled", True) is not False:
            fields.append("ipv4Enabled")
        if lacks_labels(live.get("userLabels"), s):
            fields.append("labels")
        if self.network != PENDING and not same_network(ip.get("privateNetwork", ""), self.network):
            fields.append("privateNetwork")
        # Relaxing is done here, before a server without TLS is deployed; requiring encryption is done by the
        # encryption step, once a server that uses TLS runs.
        if s.db_ssl_mode != ENCRYPTED_ONLY and ip.get("sslMode") == ENCRYPTED_ONLY:
            fields.append("sslMode")
        return fields

    # -- apply --------------------------------------------------------------------------------------------
    def create(self) -> None:
        from mlflow_gcp.steps.mlflow_version import INSTANCE_CREATED

        s = self.ctx.settings
        self.ctx.created_now.add(INSTANCE_CREATED.format(self.name))  # empty databases: nothing to migrate
        _, password = split_credentials(SECRET_MYSQL, self.ctx.secret_value(SECRET_MYSQL, "database"))
        body = {
            "name": self.name,
            "region": s.region,
            "databaseVersion": s.db_version,
            "rootPassword": password,
            "settings": self.desired_settings(),
        }
        # "Already exists" (an interrupted run, a lost answer) is the engine's: read() waits for the instance.
        operation = retry.call(
            lambda: execute(self.sql.api.instances().insert(project=self.ctx.project, body=body)),
            predicate=self.sql.read_predicate,
        )
        self.ctx.log(f"creating the Cloud SQL instance {self.name} (10 to 20 minutes)")
        self.sql.wait(operation, f"Creating the Cloud SQL instance {self.name}", CREATE_TIMEOUT)
        if self.secret is not None and s.db_user == "root":
            self.secret.mark_applied(require_target(self.secret)[0])

    def name_taken(self) -> MlflowGcpError:
        return NameTakenError(
            f"The Cloud SQL instance name {self.name} is not available: it is used or was deleted less than a "
            "week ago (Cloud SQL keeps deleted names reserved).",
            "Pass --db-instance with another name.",
        )

    def effect(self, field: str, current: dict) -> Effect:
        if field == "databaseVersion":
            live = version_key(current.get("databaseVersion", ""))
            return UPGRADE if version_key(self.ctx.settings.db_version) > live else DOWNGRADE
        return super().effect(field, current)

    def cannot_change(self, current: dict, fields: list[str]) -> MlflowGcpError:
        s = self.ctx.settings
        if "databaseVersion" in fields:
            live = current.get("databaseVersion")
            return MlflowGcpError(
                f"The Cloud SQL instance {self.name} runs {live}; the settings ask for the older {s.db_version}, "
                "and MySQL cannot be downgraded in place.",
                f"Pass --db-version {live} (or `--reset db-version` if it is the default) to keep it. To really go "
                "back, export the databases, create a new instance with --db-instance and import them.",
            )
        live_network = current.get("settings", {}).get("ipConfiguration", {}).get("privateNetwork", "")
        return MlflowGcpError(
            f"The Cloud SQL instance {self.name} is on the network {network_of(live_network)[1]}, the settings ask "
            f"for {s.network}; an instance's private network cannot be changed by this tool.",
            f"Pass --network {network_of(live_network)[1]} to keep it, or create a new instance on the other "
            "network with --db-instance and move the data (export and import).",
        )

    def observed(self, current: dict) -> dict[str, Any]:
        live = current.get("settings", {})
        values = {"db_version": current.get("databaseVersion"), "db_tier": live.get("tier")}
        values["db_edition"] = live.get("edition", "ENTERPRISE")
        values["db_ssl_mode"] = live.get("ipConfiguration", {}).get("sslMode")
        return {k: v for k, v in values.items() if v}

    def update(self, current: dict, fields: list[str]) -> None:
        s = self.ctx.settings
        desired = self.desired_settings()
        if "databaseVersion" in fields:
            self.sql.write(
                lambda api: api.instances().patch(
                    project=self.ctx.project, instance=self.name, body={"databaseVersion": s.db_version}
                ),
                f"Upgrading the Cloud SQL instance {self.name} to {s.db_version}",
                UPDATE_TIMEOUT,
            )
            fields = [f for f in fields if f != "databaseVersion"]
            if not fields:
                return
        patch: dict[str, Any] = {}
        for field in fields:
            if field in ("tier", "edition", "deletionProtectionEnabled", "backupConfiguration"):
                patch[field] = desired[field]
            elif field in ("ipv4Enabled", "privateNetwork", "sslMode"):
                # together: private IP only is one setting, whatever Cloud SQL merges or replaces. The SSL mode
                # stays the live one unless it is the field being relaxed (see drift()).
                live_ssl = current.get("settings", {}).get("ipConfiguration", {}).get("sslMode")
                ip = dict(desired["ipConfiguration"])
                if "sslMode" not in fields and live_ssl:
                    ip["sslMode"] = live_ssl
                patch["ipConfiguration"] = ip
            elif field == "labels":  # the live labels kept, ours put back
                patch["userLabels"] = with_labels(current.get("settings", {}).get("userLabels"), self.ctx.settings)
        self.sql.write(
            lambda api: api.instances().patch(project=self.ctx.project, instance=self.name, body={"settings": patch}),
            f"Updating the Cloud SQL instance {self.name} ({', '.join(fields)})",
            UPDATE_TIMEOUT,
        )

    def outputs(self, current: dict) -> dict[str, str]:
        values = {"database.instance": self.name, "database.connection_name": current.get("connectionName", "")}
        values[SCHEMA_OUTPUT] = schema_version(current.get("settings", {}).get("userLabels"))
        private = next((a["ipAddress"] for a in current.get("ipAddresses", []) if a.get("type") == "PRIVATE"), None)
        if private:
            values["database.private_ip"] = private
        ca = current.get("serverCaCert", {}).get("cert", "")
        if ca:
            values["database.ca_cert_b64"] = base64.b64encode(ca.encode("ascii")).decode("ascii")
        return values

    def details(self, current: dict) -> dict[str, str]:
        live = current.get("settings", {})
        private = next((a["ipAddress"] for a in current.get("ipAddresses", []) if a.get("type") == "PRIVATE"), "")
        return {
            "state": current.get("state", ""),
            "version": current.get("databaseVersion", ""),
            "tier": live.get("tier", ""),
            "edition": live.get("edition", ""),
            "private ip": private or "none",
            "public ip": "on" if live.get("ipConfiguration", {}).get("ipv4Enabled", True) else "off",
            "deletion protection": "on" if live.get("deletionProtectionEnabled") else "off",
        }

    def delete(self, current: dict) -> None:
        """Only for `down --delete-data`: turns deletion protection off first."""
        if current.get("settings", {}).get("deletionProtectionEnabled"):
            self.sql.write(
                lambda api: api.instances().patch(
                    project=self.ctx.project,
                    instance=self.name,
                    body={"settings": {"deletionProtectionEnabled": False}},
                ),
                f"Turning off deletion protection of {self.name}",
                UPDATE_TIMEOUT,
            )
        self.sql.write(
            lambda api: api.instances().delete(project=self.ctx.project, instance=self.name),
            f"Deleting the Cloud SQL instance {self.name}",
            UPDATE_TIMEOUT,
        )
