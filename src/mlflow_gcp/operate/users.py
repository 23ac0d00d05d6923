"""The users of the MLflow server and their permissions, through MLflow's basic-auth REST API as the admin of
`mlflow-credentials`.

Routes (MLflow's `mlflow/server/auth/routes.py`, the pinned mlflow[auth] of container/requirements.txt):
`GET  /api/2.0/mlflow/users/list`, `GET /api/2.0/mlflow/users/get`, `POST /api/2.0/mlflow/users/create`,
`PATCH /api/2.0/mlflow/users/update-password`, `PATCH /api/2.0/mlflow/users/update-admin`,
`DELETE /api/2.0/mlflow/users/delete`, and the per-user grants `POST /api/3.0/mlflow/users/permissions/grant`
and `.../revoke` (resource_type `experiment` or `registered_model`). Errors answer
`{"error_code": ..., "message": ...}` as every MLflow REST error does.

The admin of the secret is the server's own login (the container brings it back in line with the secret at
every start): it is never removed, demoted, given a password here, or given per-resource grants. MLflow finds a
user by `username = :name` in MySQL, whose default collations ignore case and accents (utf8mb4_0900_ai_ci, MariaDB's
utf8mb4_general_ci / uca1400_ai_ci) and, for PAD SPACE ones, trailing spaces: `ADMIN`, `Ádmin` and `admin ` all
name `admin`. So the protection compares twice: the typed name as MySQL's collations compare (`same_login`, before
asking the server), then the name the server stored for the user it found (exact).
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.errors import MlflowGcpError

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
# MLflow 3's per-user grants call "no permission" DENY (NO_PERMISSIONS remains the name of the default).
GRANT_NAMES = {"NO_PERMISSIONS": "DENY"}
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"
TIMEOUT = 30.0
MIN_PASSWORD_LENGTH = 12

USERS = "/api/2.0/mlflow/users"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


class UserError(MlflowGcpError):
    """A user command the server refused, or that would break the deployment's own login."""


@dataclass(frozen=True)
class User:
    name: str
    is_admin: bool


@dataclass(frozen=True)
class Grant:
    user: str
    kind: str  # EXPERIMENT or REGISTERED_MODEL
    resource_id: str  # the experiment id, or the registered model's name
    resource_name: str
    permission: str


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class ServerUsers:
    url: str
    admin: str
    password: str = field(repr=False)

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> Any:
        import requests

        from mlflow_gcp.resources.server_check import short_cause

        try:
            response = requests.request(
                method,
                self.url.rstrip("/") + path,
                params=params,
                json=body,
                auth=(self.admin, self.password),
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise UserError(
                f"The MLflow server at {self.url} cannot be reached: {short_cause(e)}.",
                "Check the network between this machine and the server; `mlflow-gcp status` checks it too.",
            ) from e
        if response.status_code == 401:
            raise UserError(
                f"The server at {self.url} refused the admin login of mlflow-credentials ({self.admin}).",
                "Run `mlflow-gcp status`: a rotation may not have finished (`mlflow-gcp credentials rotate "
                "--mlflow` completes it).",
            )
        if response.status_code == 403 and "/users" in path and "permissions" not in path:
            raise UserError(
                f"The server refused user management to {self.admin}.",
                "The login of mlflow-credentials must be the server's admin: restarting the service (`mlflow-gcp up`"
                " after a change) brings it back in line with the secret.",
            )
        if response.status_code >= 400:
            try:
                error = response.json()
            except ValueError:
                error = {}
            raise _ApiError(
                response.status_code,
                str(error.get("error_code", "")),
                str(error.get("message") or response.text[:200] or response.reason),
            )
        return response.json() if response.content else {}

    # -- users -----------------------------------------------------------------------------------------------
    def list(self) -> list[User]:
        answer = self._call("GET", f"{USERS}/list")
        return sorted((User(u["username"], bool(u.get("is_admin"))) for u in answer.get("users", [])), key=_name)

    def get(self, name: str) -> User | None:
        try:
            user = self._call("GET", f"{USERS}/get", params={"username": name}).get("user", {})
        except _ApiError as e:
            if e.code == "RESOURCE_DOES_NOT_EXIST" or e.status == 404:
                return None
            raise self._error(e, f"Reading the user {name}") from e
        return User(user.get("username", name), bool(user.get("is_admin")))

    def require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise UserError(f"There is no user {name} on the server.", "`mlflow-gcp users list` shows the users.")
        return user

    def add(self, name: str, password: str, *, admin: bool = False) -> User:
        _check_name(name)
        _check_password(password)
        try:
            self._call("POST", f"{USERS}/create", body={"username": name, "password": password})
        except _ApiError as e:
            if e.code == "RESOURCE_ALREADY_EXISTS" or self.get(name) is not None:
                raise UserError(
                    f"The user {name} exists already.",
                    f"`mlflow-gcp users password {name}` gives it a new password.",
                ) from e
            raise self._error(e, f"Creating the user {name}") from e
        if admin:
            self._call("PATCH", f"{USERS}/update-admin", body={"username": name, "is_admin": True})
        return User(name, admin)

    def remove(self, name: str) -> None:
        self._protect(name, "removed")
        self._protect(self.require(name).name, "removed")
        try:
            self._call("DELETE", f"{USERS}/delete", body={"username": name})
        except _ApiError as e:
            raise self._error(e, f"Removing the user {name}") from e

    def set_password(self, name: str, password: str) -> None:
        self._protect(name, "given a password here")
        _check_password(password)
        self._protect(self.require(name).name, "given a password here")
        try:
            self._call("PATCH", f"{USERS}/update-password", body={"username": name, "password": password})
        except _ApiError as e:
            raise self._error(e, f"Changing the password of {name}") from e

    # -- permissions -----------------------------------------------------------------------------------------
    def grant(self, name: str, kind: str, target: str, permission: str) -> Grant:
        """Set `name`'s permission on one experiment (by name or id) or registered model (by name)."""
        permission = permission.upper()
        if permission not in PERMISSIONS:
            raise UserError(f"Unknown permission {permission}.", f"Use one of {', '.join(PERMISSIONS)}.")
        what = "limited by a grant (an admin has every permission)"
        self._protect(name, what)
        self._protect(self.require(name).name, what)
        resource_id, resource_name = self._experiment(target) if kind == EXPERIMENT else (self._model(target), target)
        body = {
            "username": name,
            "resource_type": kind,
            "resource_id": resource_id,
            "permission": GRANT_NAMES.get(permission, permission),
        }
        try:
            self._call("POST", GRANT, body=body)
        except _ApiError as e:
            if e.code != "RESOURCE_ALREADY_EXISTS":
                raise self._error(e, f"Granting {permission} to {name}") from e
            # One grant per user and resource: a new permission replaces the old one.
            self._call("POST", REVOKE, body={k: v for k, v in body.items() if k != "permission"})
            self._call("POST", GRANT, body=body)
        return Grant(name, kind, resource_id, resource_name, permission)

    def _experiment(self, target: str) -> tuple[str, str]:
        """(id, name) of an experiment given by name, or by id when no experiment has that name."""
        try:
            found = self._call("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": target})
            experiment = found["experiment"]
            return experiment["experiment_id"], experiment["name"]
        except _ApiError as e:
            if e.code != "RESOURCE_DOES_NOT_EXIST":
                raise self._error(e, f"Looking up the experiment {target}") from e
        if target.isdigit():
            try:
                experiment = self._call("GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": target})
                return target, experiment["experiment"]["name"]
            except _ApiError as e:
                if e.code != "RESOURCE_DOES_NOT_EXIST":
                    raise self._error(e, f"Looking up the experiment {target}") from e
        raise UserError(
            f"There is no experiment named {target} (nor with that id) on the server.",
            "Check the name in the MLflow UI, or give the experiment id.",
        )

    def _model(self, target: str) -> str:
        try:
            self._call("GET", "/api/2.0/mlflow/registered-models/get", params={"name": target})
        except _ApiError as e:
            if e.code == "RESOURCE_DOES_NOT_EXIST":
                raise UserError(
                    f"There is no registered model named {target} on the server.",
                    "Check the name in the MLflow UI (Models).",
                ) from e
            raise self._error(e, f"Looking up the registered model {target}") from e
        return target

    # -- guards ----------------------------------------------------------------------------------------------
    def _protect(self, name: str, what: str) -> None:
        if same_login(name, self.admin):
            shown = name if name == self.admin else f"{name!r} (as the database compares names: {self.admin})"
            raise UserError(
                f"{shown} is the admin of mlflow-credentials, the deployment's own login: it cannot be {what}.",
                "Its password changes with `mlflow-gcp credentials rotate --mlflow`.",
            )

    @staticmethod
    def _error(error: _ApiError, doing: str) -> UserError:
        return UserError(f"{doing} failed: the server answered {error.status} ({error.message}).")


def collation_key(name: str) -> str:
    """A name as MySQL's default collations compare it, or more loosely: accents and other combining marks
    dropped (compatibility-decomposed), case folded, trailing spaces ignored. Looser is the safe side for a guard."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().rstrip(" ")


def same_login(name: str, other: str) -> bool:
    return collation_key(name) == collation_key(other)


def _name(user: User) -> str:
    return user.name


def _check_name(name: str) -> None:
    if not name or name != name.strip() or any(c.isspace() or c == ":" for c in name):
        raise UserError(
            f"{name!r} is not a usable user name.", "Use a name without spaces or ':' (basic auth splits on ':')."
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"The password is too short ({len(password)} characters).",
            f"Use at least {MIN_PASSWORD_LENGTH} characters, or leave out --password-stdin for a generated one.",
        )
