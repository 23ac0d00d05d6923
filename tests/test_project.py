"""The project is found as gcloud users expect (flag, MLFLOW_GCP_PROJECT, .env, CLOUDSDK_CORE_PROJECT,
GOOGLE_CLOUD_PROJECT, then gcloud's active configuration, read from its file), said once on stderr, and added to
the commands hints suggest when it came from a flag; `eval` of a failed `credentials` fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_gcp.project import FLAG, ProjectSource, find_project, gcloud_project
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli


def gcloud_config(directory: Path, project: str, name: str = "default", active: str | None = None) -> Path:
    """Files as `gcloud config configurations activate NAME` and `gcloud config set project P` leave them."""
    (directory / "configurations").mkdir(parents=True, exist_ok=True)
    path = directory / "configurations" / f"config_{name}"
    path.write_text(f"[core]\naccount = someone@example.com\nproject = {project}\n\n[compute]\nregion = us-east1\n")
    if active is not None:
        (directory / "active_config").write_text(active)
    return path


def test_gcloud_active_configuration_is_read_from_its_file(tmp_path):
    gcloud_config(tmp_path, "default-proj")
    gcloud_config(tmp_path, "work-proj", name="work", active="work")
    environ = {"CLOUDSDK_CONFIG": str(tmp_path)}
    assert gcloud_project(environ).project == "work-proj"
    # CLOUDSDK_ACTIVE_CONFIG_NAME wins over the active_config file, as in gcloud.
    assert gcloud_project({**environ, "CLOUDSDK_ACTIVE_CONFIG_NAME": "default"}).project == "default-proj"
    (tmp_path / "active_config").unlink()  # no active_config file: the configuration named default
    assert gcloud_project(environ).project == "default-proj"


@pytest.mark.parametrize(
    "content", ["", "[core]\naccount = a@example.com\n", "not an ini file ["], ids=["empty", "no-project", "broken"]
)
def test_no_gcloud_project_is_none(tmp_path, content):
    (tmp_path / "configurations").mkdir()
    (tmp_path / "configurations" / "config_default").write_text(content)
    assert gcloud_project({"CLOUDSDK_CONFIG": str(tmp_path)}) is None
    assert gcloud_project({"CLOUDSDK_CONFIG": str(tmp_path / "missing")}) is None


def test_precedence_flag_tool_variable_generic_variables_then_gcloud(tmp_path):
    gcloud_config(tmp_path, "gcloud-proj")
    environ = {
        "CLOUDSDK_CONFIG": str(tmp_path),
        "MLFLOW_GCP_PROJECT": "tool-proj",
        "CLOUDSDK_CORE_PROJECT": "sdk-proj",
        "GOOGLE_CLOUD_PROJECT": "cloud-proj",
    }
    assert find_project("flag-proj", FLAG, environ) == ProjectSource("flag-proj", FLAG)
    assert find_project("tool-proj", "MLFLOW_GCP_PROJECT", environ).origin == "MLFLOW_GCP_PROJECT"
    # MLFLOW_GCP_PROJECT from .env keeps its meaning: above the variables every Google tool reads.
    from_file = find_project("tool-proj", "MLFLOW_GCP_PROJECT", environ, {"MLFLOW_GCP_PROJECT"}, "/w/.env")
    assert from_file.describe() == "MLFLOW_GCP_PROJECT in /w/.env"
    assert find_project("", None, environ).project == "sdk-proj"
    del environ["CLOUDSDK_CORE_PROJECT"]
    assert find_project("", None, environ).describe() == "GOOGLE_CLOUD_PROJECT"
    del environ["GOOGLE_CLOUD_PROJECT"]
    found = find_project("", None, environ)
    assert found.project == "gcloud-proj" and "configuration 'default'" in found.describe()


def test_the_project_of_gcloud_is_used_and_said_once(fake, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_GCP_PROJECT")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    path = gcloud_config(tmp_path / "gcloud", PROJECT)
    result = cli("credentials")
    # The request went to that project: the fake answers it has nothing deployed there.
    assert f"Nothing is deployed in {PROJECT}" in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("project:")]
    assert said == [f"project: {PROJECT} (from gcloud configuration 'default', {path})"]
    assert result.stdout == ""


def test_a_hint_names_the_project_a_flag_gave(fake, monkeypatch):
    monkeypatch.delenv("MLFLOW_GCP_PROJECT")
    result = cli("credentials", "--project", PROJECT)
    assert result.exit_code == 1
    assert f"`mlflow-gcp up --project {PROJECT}`" in result.stderr
    assert not any(line.startswith("project:") for line in result.stderr.splitlines())  # a flag says it


def test_a_hint_without_a_flag_is_unchanged(fake):
    result = cli("credentials")
    assert "`mlflow-gcp up`" in result.stderr
    assert f"project: {PROJECT} (from MLFLOW_GCP_PROJECT)" in result.stderr


def test_no_project_anywhere_says_every_way_to_give_one(fake, monkeypatch):
    monkeypatch.delenv("MLFLOW_GCP_PROJECT")
    result = cli("cost", "--offline")
    assert result.exit_code == 2
    assert "No project given" in result.stderr and "gcloud config set project" in result.stderr


def test_eval_of_a_failed_credentials_fails_and_shows_the_error(tmp_path):
    """`eval "$(cmd)"` of an empty output succeeds: the suggested line makes the failure fail the eval, so a
    script under `set -e` stops, and the error reaches the terminal."""
    from mlflow_gcp.cli.project import eval_line

    # A clean environment, as a new shell has: no project from any variable another test of this worker left set, no
    # gcloud configuration, no credentials (CI failed once with the credentials error instead of this one).
    environ = {k: os.environ[k] for k in ("PYTHONPATH", "LANG", "LC_ALL") if k in os.environ}
    environ.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "no-gcloud-config"))
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    script = f"set -e\n{eval_line()}\necho reached"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={**environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "reached" not in done.stdout
    assert "No project given" in done.stderr
