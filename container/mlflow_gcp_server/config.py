"""The server's configuration, read from the environment exactly as the deploy step provides it.

Secrets arrive as environment variables (Cloud Run `secretKeyRef`): `MLFLOW_ENV` (an env file),
`MYSQL_CREDENTIALS` and `MLFLOW_CREDENTIALS` (`login:password`), `MLFLOW_FLASK_SERVER_SECRET_KEY`.
Every error message names the variable and the rule, never the value.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUIRED_SETTINGS = (
    "DB_HOST", "DB_PORT", "DB_NAME", "AUTH_DB_NAME", "ARTIFACTS_DESTINATION", "GCP_PROJECT",
    "SERVICE_ACCOUNT_EMAIL",
)
SERVICE_URLS_VAR = "MLFLOW_GCP_SERVICE_URLS"
DB_CA_SETTING = "DB_CA_CERT_B64"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")

_MYSQL_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
_LOGIN = re.compile(r"^[^:\s]{1,64}$")
_GCS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ConfigError(Exception):
    """A missing or malformed setting; the message is safe to log."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ServerConfig:
    db_host: str
    db_port: int
    db_name: str
    auth_db_name: str
    artifacts_destination: str
    project: str
    service_account_email: str
    mysql: Credentials
    admin: Credentials
    flask_secret_key: str = field(repr=False)
    port: int = 8080
    service_urls: tuple[str, ...] = ()
    service_name: str = "mlflow"
    # MLFLOW_* lines of the `mlflow-env` file, passed to the server as they are (operator tuning).
    mlflow_overrides: dict[str, str] = field(default_factory=dict)
    # The database's server CA certificates (PEM): when given, the server connects with TLS and checks them.
    db_ca_pem: str = ""


def parse_env_file(text: str) -> dict[str, str]:
    """Reads what the deploy tool's `service_spec.render_env_file` writes (and hand-written files)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def required_variable(environ: Mapping[str, str], name: str, secret: str) -> str:
    value = environ.get(name, "")
    if not value.strip():
        raise ConfigError(f"{name} is missing or empty: it must come from the secret '{secret}'.")
    return value


def parse_credentials(text: str, name: str, secret: str) -> Credentials:
    user, separator, password = text.strip().partition(":")
    if not separator or not _LOGIN.match(user) or not password or any(c in password for c in "\r\n"):
        raise ConfigError(
            f"{name} (secret '{secret}') must be one line 'login:password' with a non-empty login and password."
        )
    return Credentials(user, password)


def parse_port(text: str, name: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{name} must be a TCP port number.")
    return int(text)


def parse_settings(text: str) -> dict[str, str]:
    settings = parse_env_file(text)
    missing = [key for key in REQUIRED_SETTINGS if not settings.get(key)]
    if missing:
        raise ConfigError(f"MLFLOW_ENV (secret 'mlflow-env') lacks {', '.join(missing)}.")
    problems = []
    if not _HOST.match(settings["DB_HOST"]):
        problems.append("DB_HOST must be a host name or IP address")
    for key in ("DB_NAME", "AUTH_DB_NAME"):
        if not _MYSQL_NAME.match(settings[key]):
            problems.append(f"{key} must be 1 to 64 letters, digits or underscores")
    if settings["DB_NAME"] == settings["AUTH_DB_NAME"]:
        problems.append("DB_NAME and AUTH_DB_NAME must differ")
    if not _GCS_URI.match(settings["ARTIFACTS_DESTINATION"]):
        problems.append("ARTIFACTS_DESTINATION must look like gs://BUCKET/PREFIX")
    if not _EMAIL.match(settings["SERVICE_ACCOUNT_EMAIL"]):
        problems.append("SERVICE_ACCOUNT_EMAIL must be an e-mail address")
    if problems:
        raise ConfigError(f"MLFLOW_ENV (secret 'mlflow-env'): {'; '.join(problems)}.")
    return settings


def parse_service_urls(text: str) -> tuple[str, ...]:
    """The service's own URLs: https, or http on a loopback host for local runs."""
    urls = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        parts = urlsplit(raw)
        loopback = parts.hostname in LOOPBACK_HOSTS
        if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback) \
                or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise ConfigError(
                f"{SERVICE_URLS_VAR} must be comma-separated https://HOST URLs; '{raw}' is not one."
            )
        urls.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(urls)


def parse_ca(settings: dict[str, str]) -> str:
    encoded = settings.get(DB_CA_SETTING, "")
    if not encoded:
        return ""
    try:
        pem = base64.b64decode(encoded, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{DB_CA_SETTING} in MLFLOW_ENV must be base64 of PEM certificates.") from error
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"{DB_CA_SETTING} in MLFLOW_ENV must be base64 of PEM certificates.")
    return pem


def mlflow_overrides(settings: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in settings.items() if key.startswith("MLFLOW_")}


def read_config(environ: Mapping[str, str]) -> ServerConfig:
    settings = parse_settings(required_variable(environ, "MLFLOW_ENV", "mlflow-env"))
    return ServerConfig(
        db_host=settings["DB_HOST"],
        db_port=parse_port(settings["DB_PORT"], "DB_PORT in MLFLOW_ENV"),
        db_name=settings["DB_NAME"],
        auth_db_name=settings["AUTH_DB_NAME"],
        artifacts_destination=settings["ARTIFACTS_DESTINATION"].rstrip("/"),
        project=settings["GCP_PROJECT"],
        service_account_email=settings["SERVICE_ACCOUNT_EMAIL"],
        mysql=parse_credentials(
            required_variable(environ, "MYSQL_CREDENTIALS", "mysql-credentials"),
            "MYSQL_CREDENTIALS", "mysql-credentials",
        ),
        admin=parse_credentials(
            required_variable(environ, "MLFLOW_CREDENTIALS", "mlflow-credentials"),
            "MLFLOW_CREDENTIALS", "mlflow-credentials",
        ),
        flask_secret_key=required_variable(
            environ, "MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow-flask-secret-key"
        ).strip(),
        port=parse_port(environ.get("PORT", "8080"), "PORT"),
        service_urls=parse_service_urls(environ.get(SERVICE_URLS_VAR, "")),
        service_name=environ.get("K_SERVICE", "mlflow"),
        mlflow_overrides=mlflow_overrides(settings),
        db_ca_pem=parse_ca(settings),
    )
