"""Step `database`: Cloud SQL for MySQL with a private IP only, its two databases and the MySQL user.

Order matters: the `mysql-credentials` secret comes first, so a generated password is stored in Secret
Manager before it is given to Cloud SQL (an interrupted run can never leave a password nobody knows). The
instance follows (10 to 20 minutes on Google), then the runs and auth databases, then the user of the secret,
created only when missing: a plain `up` never resets a password.

A no-op run reads the secret (its record, its versions, the value in use), the instance, the two databases
and the user list: seven requests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.config import ENCRYPTED_ONLY, SECRET_MYSQL
from mlflow_gcp.engine.base import PENDING, Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, NameTakenError, OperationFailedError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.gcp.operations import settled, wait
from mlflow_gcp.resources.password_secret import PasswordSecret, require_target
from mlflow_gcp.resources.secret import MANAGED_LABEL, new_password, split_credentials
from mlflow_gcp.steps.network import network_link

CHARSET = "utf8mb4"
# MySQL 8's default utf8mb4 collation; Cloud SQL for MySQL 8.0 and 8.4 accept it.
COLLATION = "utf8mb4_0900_ai_ci"
CREATE_TIMEOUT = 45 * 60.0
UPDATE_TIMEOUT = 30 * 60.0
SMALL_TIMEOUT = 10 * 60.0
# How long a mutation waits for another operation on the instance (a backup, maintenance, our own update).
IN_PROGRESS_DEADLINE = 30 * 60.0
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


# What SqlCalls.write waits on when a read-back found its write already applied.
APPLIED = {"status": "DONE", "name": ""}


class SqlCalls:
    """Cloud SQL Admin calls shared by the step's resources: retries and operation waiting."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        transient = ctx.retry_predicate("sqladmin")
        self.read_predicate = transient
        # Cloud SQL runs one operation at a time per instance and answers 409 operationInProgress to others.
        self.write_predicate = retry.any_of(transient, retry.is_sql_operation_in_progress)

    @property
    def api(self):
        return self.ctx.clients.sqladmin()

    def read(self, build: Callable[[Any], Any]) -> Any:
        return retry.call(lambda: execute(build(self.api)), predicate=self.read_predicate)

    def write(
        self, build: Callable[[Any], Any], what: str, timeout: float, *, applied: Callable[[], bool] | None = None
    ) -> dict:
        """Send a write and wait for its operation. `applied` (for inserts, which are not idempotent) tells after
        an ambiguous failure whether Google had applied it, so it is not sent twice."""
        operation = retry.call(
            lambda: execute(build(self.api)),
            predicate=self.write_predicate,
            deadline=IN_PROGRESS_DEADLINE,
            applied=(lambda: APPLIED if applied() else None) if applied else None,
        )
        return self.wait(operation, what, timeout)

    def wait(self, operation: dict, what: str, timeout: float) -> dict:
        project = self.ctx.project
        return wait(
            lambda: self.read(lambda api: api.operations().get(project=project, operation=operation["name"])),
            is_done=lambda op: op.get("status") == "DONE",
            error_of=lambda op: (
                "; ".join(e.get("message") or e.get("code", "") for e in (op.get("error") or {}).get("errors", []))
                or None
            ),
            what=what,
            timeout=timeout,
            first=operation,
        )


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
            "userLabels": dict(MANAGED_LABEL),
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
        labels = live.get("userLabels", {}) or {}
        if any(labels.get(k) != v for k, v in MANAGED_LABEL.items()):
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
        s = self.ctx.settings
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
                patch["userLabels"] = {**current.get("settings", {}).get("userLabels", {}), **MANAGED_LABEL}
        self.sql.write(
            lambda api: api.instances().patch(project=self.ctx.project, instance=self.name, body={"settings": patch}),
            f"Updating the Cloud SQL instance {self.name} ({', '.join(fields)})",
            UPDATE_TIMEOUT,
        )

    def outputs(self, current: dict) -> dict[str, str]:
        values = {"database.instance": self.name, "database.connection_name": current.get("connectionName", "")}
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


class Database(Resource):
    kind = "MySQL database"
    holds_data = True

    def __init__(self, ctx: StepContext, sql: SqlCalls, instance: Instance, name: str) -> None:
        super().__init__(ctx, name)
        self.sql, self.instance = sql, instance

    def read(self) -> dict | None:
        if not self.instance.readable():
            return None
        try:
            return self.sql.read(
                lambda api: api.databases().get(
                    project=self.ctx.project, instance=self.instance.name, database=self.name
                )
            )
        except gexc.NotFound:
            return None

    def unreadable(self) -> str:
        return self.instance.unreadable_children()

    def drift(self, current: dict) -> list[str]:
        return [f for f, v in (("charset", CHARSET), ("collation", COLLATION)) if current.get(f) != v]

    def create(self) -> None:
        body = {
            "name": self.name,
            "charset": CHARSET,
            "collation": COLLATION,
            "instance": self.instance.name,
            "project": self.ctx.project,
        }
        try:
            self.sql.write(
                lambda api: api.databases().insert(project=self.ctx.project, instance=self.instance.name, body=body),
                f"Creating the database {self.name}",
                SMALL_TIMEOUT,
                applied=lambda: self.read() is not None,
            )
        except OperationFailedError:
            if self.read() is None:
                raise  # a real failure, not a database made meanwhile

    def update(self, current: dict, fields: list[str]) -> None:
        body = {"charset": CHARSET, "collation": COLLATION}
        self.sql.write(
            lambda api: api.databases().patch(
                project=self.ctx.project, instance=self.instance.name, database=self.name, body=body
            ),
            f"Setting the character set of the database {self.name}",
            SMALL_TIMEOUT,
        )

    def details(self, current: dict) -> dict[str, str]:
        return {"charset": current.get("charset", ""), "collation": current.get("collation", "")}

    def delete(self, current: dict) -> None:
        self.sql.write(
            lambda api: api.databases().delete(
                project=self.ctx.project, instance=self.instance.name, database=self.name
            ),
            f"Deleting the database {self.name}",
            SMALL_TIMEOUT,
        )


class User(Resource):
    """The MySQL user of the `mysql-credentials` secret, allowed from any host ('%'): the server reaches the
    private IP through the connector. Created when missing; an existing user's password is never reset."""

    kind = "MySQL user"
    holds_data = True
    HOST = "%"

    def __init__(self, ctx: StepContext, sql: SqlCalls, instance: Instance, secret: PasswordSecret | None = None):
        super().__init__(ctx, ctx.settings.db_user)
        self.sql, self.instance, self.secret = sql, instance, secret

    def _credentials(self) -> tuple[str, str]:
        login, password = split_credentials(SECRET_MYSQL, self.ctx.secret_value(SECRET_MYSQL, "database"))
        if login != self.name:
            raise MlflowGcpError(
                f"The secret {SECRET_MYSQL} is for the MySQL user {login}, but the settings ask for {self.name}.",
                f"Pass --db-user {login}, or add a version `{self.name}:PASSWORD` to the secret yourself.",
            )
        return login, password

    def read(self) -> dict | None:
        if not self.instance.readable():
            return None
        try:
            response = self.sql.read(
                lambda api: api.users().list(project=self.ctx.project, instance=self.instance.name)
            )
        except gexc.NotFound:
            return None
        return next(
            (u for u in response.get("items", []) if u.get("name") == self.name and u.get("host", "") in ("%", "")),
            None,
        )

    def unreadable(self) -> str:
        return self.instance.unreadable_children()

    def problem(self, current: dict | None) -> MlflowGcpError | None:
        """The server logs in as the user of `mysql-credentials`: a secret for another user than the settings'
        is refused, whether the settings' user exists or not."""
        value = self.ctx.secret_values.get(SECRET_MYSQL)
        if value is None:
            return None  # unreadable: reported on the secret's line
        try:
            self._credentials()
        except MlflowGcpError as error:
            return error
        return None

    def create(self) -> None:
        login, password = self._credentials()
        body = {"name": login, "host": self.HOST, "password": password}
        try:
            self.sql.write(
                lambda api: api.users().insert(project=self.ctx.project, instance=self.instance.name, body=body),
                f"Creating the MySQL user {login}",
                SMALL_TIMEOUT,
                applied=lambda: self.read() is not None,
            )
        except OperationFailedError:
            if self.read() is None:
                raise
        if self.secret is not None and self.secret.versions is not None:
            self.secret.mark_applied(require_target(self.secret)[0])

    def drift(self, current: dict) -> list[str]:
        """`password`: a run was changing it (a rotation or a lost password): the user may have either
        version's, so it is set to the one the service will use. `record`: no record yet (a deployment made
        by hand or by an older version of the tool): the version in use is recorded as the applied one."""
        versions = self.secret.versions if self.secret is not None else None
        if versions is None or versions.target is None or not versions.pending:
            return []
        return ["password"] if versions.rotating is not None else ["record"]

    def update(self, current: dict, fields: list[str]) -> None:
        assert self.secret is not None and self.secret.versions is not None
        versions = self.secret.versions
        number, _ = require_target(self.secret)
        if "password" in fields:
            login, password = self._credentials()
            body = {"name": login, "host": current.get("host") or self.HOST, "password": password}
            self.sql.write(
                lambda api: api.users().update(
                    project=self.ctx.project, instance=self.instance.name, name=login, host=body["host"], body=body
                ),
                f"Setting the password of the MySQL user {login}",
                SMALL_TIMEOUT,
            )
            if versions.rotating != number:
                self.ctx.log(
                    f"a rotation of {SECRET_MYSQL} to version {versions.rotating} did not finish: the MySQL user "
                    f"{login} has the password of version {number} again (`mlflow-gcp credentials rotate` "
                    "finishes the rotation)"
                )
            else:
                self.ctx.log(
                    f"Cloud SQL: the MySQL user {login} now has the password of version {number} of {SECRET_MYSQL}"
                )
        self.secret.mark_applied(number)

    def details(self, current: dict) -> dict[str, str]:
        return {"host": current.get("host") or "%"}

    def delete(self, current: dict) -> None:
        if self.name == "root":
            return  # root goes with the instance; deleting it would lock everyone out
        self.sql.write(
            lambda api: api.users().delete(
                project=self.ctx.project, instance=self.instance.name, name=self.name, host=current.get("host") or "%"
            ),
            f"Deleting the MySQL user {self.name}",
            SMALL_TIMEOUT,
        )


def resources(ctx: StepContext) -> Iterator[Resource]:
    s = ctx.settings
    secret = PasswordSecret(
        ctx, SECRET_MYSQL, lambda: f"{s.db_user}:{new_password()}", user=f"the MySQL user {s.db_user}"
    )
    yield secret
    sql = SqlCalls(ctx)
    instance = Instance(ctx, sql, secret)
    yield instance
    yield Database(ctx, sql, instance, s.db_name)
    yield Database(ctx, sql, instance, s.auth_db_name)
    yield User(ctx, sql, instance, secret)
