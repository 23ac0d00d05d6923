"""Which Google Cloud project a command works on, and where that came from.

In order: `--project`; MLFLOW_GCP_PROJECT (the environment, then `.env`: the tool's own setting, so a `.env`
written for this tool keeps winning over the generic variables below); CLOUDSDK_CORE_PROJECT (gcloud's own
variable, which gcloud puts above its configuration files: https://cloud.google.com/sdk/docs/properties);
GOOGLE_CLOUD_PROJECT (read by Google's client libraries, set by Cloud Shell); then the `[core] project` of
gcloud's active configuration, read from the file gcloud reads (no `gcloud` process is started):
`$CLOUDSDK_CONFIG` or the default directory, the configuration named by CLOUDSDK_ACTIVE_CONFIG_NAME or the
`active_config` file, else `default` (https://cloud.google.com/sdk/docs/configurations).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

FLAG = "flag"
PROJECT_VARIABLE = "MLFLOW_GCP_PROJECT"
# Variables that name a project for any Google tool, after the tool's own (MLFLOW_GCP_PROJECT).
GENERIC_VARIABLES = ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT")


@dataclass(frozen=True)
class ProjectSource:
    project: str
    origin: str  # FLAG, a variable name, or "gcloud"
    where: str = ""  # the .env file a variable came from, or gcloud's configuration file

    @property
    def from_flag(self) -> bool:
        return self.origin == FLAG

    def describe(self) -> str:
        if self.origin == FLAG:
            return "--project"
        if self.origin == "gcloud":
            return f"gcloud {self.where}"
        return f"{self.origin} in {self.where}" if self.where else self.origin


def gcloud_config_dir(environ: Mapping[str, str]) -> Path:
    """Where gcloud keeps its configurations (googlecloudsdk.core.config.Paths.global_config_dir)."""
    if environ.get("CLOUDSDK_CONFIG"):
        return Path(environ["CLOUDSDK_CONFIG"]).expanduser()
    if os.name == "nt" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / "gcloud"
    return Path("~/.config/gcloud").expanduser()


def active_configuration(environ: Mapping[str, str]) -> tuple[str, Path]:
    """The name of gcloud's active configuration and its file."""
    directory = gcloud_config_dir(environ)
    name = environ.get("CLOUDSDK_ACTIVE_CONFIG_NAME", "").strip()
    if not name:
        try:
            name = (directory / "active_config").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
    name = name or "default"
    return name, directory / "configurations" / f"config_{name}"


def gcloud_project(environ: Mapping[str, str]) -> ProjectSource | None:
    """The `[core] project` of gcloud's active configuration, or None (no gcloud, no project set, or a file
    gcloud could not read either)."""
    name, path = active_configuration(environ)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    project = parser.get("core", "project", fallback="").strip()
    if not project:
        return None
    return ProjectSource(project, "gcloud", f"configuration '{name}', {path}")


def find_project(
    given: str,
    given_from: str | None,
    environ: Mapping[str, str],
    file_variables: Collection[str] = (),
    env_path: str = ".env",
) -> ProjectSource | None:
    """Where this run's project comes from. `given`/`given_from`: the value of the project setting and how it
    was given (FLAG, PROJECT_VARIABLE, or None when neither gave it); `file_variables`: the names `.env` (the
    file `env_path`) put in `environ`."""

    def variable(name: str) -> ProjectSource | None:
        value = environ.get(name, "").strip()
        if not value:
            return None
        return ProjectSource(value, name, env_path if name in file_variables else "")

    if given:
        if given_from == FLAG:
            return ProjectSource(given, FLAG)
        return ProjectSource(given, PROJECT_VARIABLE, env_path if PROJECT_VARIABLE in file_variables else "")
    for name in GENERIC_VARIABLES:
        if found := variable(name):
            return found
    return gcloud_project(environ)
