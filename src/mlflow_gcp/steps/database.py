"""Step `database`: Cloud SQL for MySQL with a private IP only, its two databases and the MySQL user.

Order matters: the `mysql-credentials` secret comes first, so a generated password is stored in Secret
Manager before it is given to Cloud SQL (an interrupted run can never leave a password nobody knows). The
instance follows (10 to 20 minutes on Google), then the runs and auth databases, then the user of the secret,
created only when missing: a plain `up` never resets a password.

A no-op run reads the secret (its record, its versions, the value in use), the instance, the two databases
and the user list: seven requests.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.api_core import exceptions as gexc

from mlflow_gcp.config import SECRET_MYSQL
from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, OperationFailedError
from mlflow_gcp.resources.password_secret import PasswordSecret, require_target
from mlflow_gcp.resources.secret import new_password, split_credentials
from mlflow_gcp.steps.sql_calls import SMALL_TIMEOUT, SqlCalls
from mlflow_gcp.steps.sql_instance import Instance

CHARSET = "utf8mb4"
# MySQL 8's default utf8mb4 collation; Cloud SQL for MySQL 8.0 and 8.4 accept it.
COLLATION = "utf8mb4_0900_ai_ci"


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
