"""`mlflow-gcp credentials` (what a client needs, evaluated by a real shell) and `credentials rotate` (new
passwords rolled out and verified; a fault at any stage leaves a working login, and a rerun converges)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from dotenv import dotenv_values

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli
from tests.server_double import api_login, deploy, pin_secret_versions

INSTANCE = "mlflow-tracking-database"
ROTATE_SECRETS = (SECRET_MLFLOW, SECRET_MYSQL)


@pytest.fixture
def floating(fake, tmp_path, monkeypatch):
    """A deployment as `up` made it (its service may refer to the `latest` secret versions)."""
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "1")
    double = deploy(fake, tmp_path, monkeypatch)
    yield double
    double.stop()


@pytest.fixture
def double(fake, floating):
    """A deployment whose service pins the secret versions it runs with, as the deploy step does."""
    pin_secret_versions(fake)
    return floating


def credentials(fmt: str = "json") -> dict[str, str]:
    result = cli("credentials", "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        return json.loads(result.stdout)
    return dict(dotenv_values(stream=io.StringIO(result.stdout)))


def team_login_works() -> bool:
    """What a member gets from `mlflow-gcp credentials` lets them in."""
    env = credentials()
    return (
        api_login(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == 200
    )


def versions(fake, secret_id: str) -> list[tuple[str, str]]:
    """(number, state) of each version of a secret."""
    return [
        (v["name"].rsplit("/", 1)[-1], v["state"])
        for v in fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{secret_id}"]
    ]


def pinned(fake, secret_id: str) -> str:
    """The version the service's template pins ("latest" resolved to the newest version's number)."""
    env = fake.run_service("mlflow")["template"]["containers"][0]["env"]
    refs = [e["valueSource"]["secretKeyRef"] for e in env if "valueSource" in e]
    version = next(r.get("version", "latest") for r in refs if r["secret"] == secret_id)
    return versions(fake, secret_id)[-1][0] if version == "latest" else version


def db_password(fake) -> str:
    return next(u["password"] for u in fake.sql_users[INSTANCE] if u["name"] == "root")


def assert_converged(fake, double) -> None:
    """One enabled version per rotated secret, the one the service pins; the DB user has its password; the
    team's login works and the server is healthy."""
    for secret_id in ROTATE_SECRETS:
        enabled = [n for n, state in versions(fake, secret_id) if state == "ENABLED"]
        assert enabled == [pinned(fake, secret_id)], (secret_id, versions(fake, secret_id))
    assert fake.secret_value(SECRET_MYSQL) == f"root:{db_password(fake)}"
    assert team_login_works()
    assert double.database_ok()


# -- credentials ---------------------------------------------------------------------------------------------
def test_env_output_evaluated_by_a_real_shell_logs_in(fake, double):
    script = (
        'eval "$(mlflow-gcp credentials)" && "$PYTHON" -c "'
        "import os, requests; "
        "r = requests.get(os.environ['MLFLOW_TRACKING_URI'] + '/api/2.0/mlflow/experiments/search', "
        "auth=(os.environ['MLFLOW_TRACKING_USERNAME'], os.environ['MLFLOW_TRACKING_PASSWORD']), timeout=5); "
        "print(os.environ['MLFLOW_TRACKING_URI'], r.status_code)"
        '"'
    )
    # The `mlflow-gcp` installed with the Python that runs the tests (a virtualenv's is not on PATH otherwise).
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHON": sys.executable, "PATH": path}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [double.urls[1], "200"]


def test_env_output_is_plain_shell_quoted_exports_on_stdout_only(fake, double):
    result = cli("credentials")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export MLFLOW_TRACKING_URI",
        "export MLFLOW_TRACKING_USERNAME",
        "export MLFLOW_TRACKING_PASSWORD",
        # so that artifacts over Cloud Run's 32 MiB request limit go straight to the bucket
        "export MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
        "export MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
        "export MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
    ]
    password = fake.secret_value(SECRET_MLFLOW).split(":", 1)[1]
    assert password in result.stdout and password not in result.stderr
    assert "\x1b[" not in result.stdout  # no Rich markup or colour


def test_a_password_with_shell_characters_is_quoted(fake, double):
    from mlflow_gcp.cli.credentials import Format, render

    values = {"MLFLOW_TRACKING_PASSWORD": 'it\'s $HOME `x` "q" \\'}
    out = subprocess.run(
        ["bash", "-c", render(values, Format.env) + 'printf %s "$MLFLOW_TRACKING_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == values["MLFLOW_TRACKING_PASSWORD"]  # dotenv and docker: tests/test_credentials_formats.py


def test_dotenv_and_json_formats_log_in(fake, double):
    for fmt in ("dotenv", "json"):
        env = credentials(fmt)
        assert env["MLFLOW_TRACKING_URI"] == double.urls[1]
        assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert (
            api_login(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
            == 200
        )
    assert fake.mutating_requests() == []


def test_without_a_deployment_it_says_to_run_up(fake):
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    result = cli("credentials")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "mlflow-gcp up" in result.stderr and "Traceback" not in result.output


# -- rotate --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, rotated",
    [((), ROTATE_SECRETS), (("--mlflow",), (SECRET_MLFLOW,)), (("--database",), (SECRET_MYSQL,))],
    ids=["both", "mlflow", "database"],
)
def test_rotate_rolls_out_verifies_then_disables_the_old_versions(fake, double, flags, rotated):
    old = credentials()
    old_db = db_password(fake)
    startups = double.startups
    result = cli("credentials", "rotate", *flags)
    assert result.exit_code == 0, result.output
    for secret_id in ROTATE_SECRETS:
        if secret_id in rotated:
            assert versions(fake, secret_id) == [("1", "DISABLED"), ("2", "ENABLED")]
            assert pinned(fake, secret_id) == "2"
        else:
            assert versions(fake, secret_id) == [("1", "ENABLED")]
    # One new revision (two while the deploy step does not pin versions itself: rotate then pins them after it).
    assert 1 <= double.startups - startups <= 2
    new = credentials()
    assert (new["MLFLOW_TRACKING_PASSWORD"] != old["MLFLOW_TRACKING_PASSWORD"]) == (SECRET_MLFLOW in rotated)
    assert (db_password(fake) != old_db) == (SECRET_MYSQL in rotated)
    if SECRET_MLFLOW in rotated:
        assert api_login(old["MLFLOW_TRACKING_URI"], "admin", old["MLFLOW_TRACKING_PASSWORD"]) == 401
    assert_converged(fake, double)
    assert new["MLFLOW_TRACKING_PASSWORD"] not in result.output  # rotate never prints a secret


FAULTS = {
    "secret add": lambda fake, double: fake.fail(400, api="secretmanager", path_contains=":addVersion"),
    "second secret add": lambda fake, double: fake.fail(
        400, api="secretmanager", path_contains=f"{SECRET_MYSQL}:addVersion"
    ),
    "users.update": lambda fake, double: fake.fail(400, api="sqladmin", method="PUT", path_contains="/users"),
    "service update": lambda fake, double: fake.fail(400, api="run", method="PATCH"),
    "revision start": lambda fake, double: fake.run_fail_next_revision(),
    "login check": lambda fake, double: setattr(double, "admin_frozen", True),
    "disable": lambda fake, double: fake.fail(400, api="secretmanager", path_contains=":disable"),
}


@pytest.mark.parametrize("stage", list(FAULTS))
def test_a_fault_at_any_stage_keeps_a_working_login_and_a_rerun_converges(fake, double, stage):
    old = credentials()
    FAULTS[stage](fake, double)
    result = cli("credentials", "rotate")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "mlflow-gcp credentials rotate" in result.stderr  # how to resume
    # The team is never without a working login, and the server keeps its database.
    assert team_login_works()
    assert double.database_ok()
    if stage != "disable":
        assert credentials() == old  # the old login is still the one in use
        assert f"root:{db_password(fake)}" == _pinned_value(fake, SECRET_MYSQL)
    if stage != "disable":
        # The rotation undid its own versions: `latest` is the applied one again, nothing for `up` to take.
        for secret_id in ROTATE_SECRETS:
            assert [n for n, state in versions(fake, secret_id) if state == "ENABLED"] == ["1"], versions(
                fake, secret_id
            )
        if stage != "secret add":
            assert "destroyed (never used)" in " ".join(result.stderr.split())
    double.admin_frozen = False  # the cause is fixed

    rerun = cli("credentials", "rotate")
    assert rerun.exit_code == 0, rerun.output
    assert_converged(fake, double)
    assert credentials()["MLFLOW_TRACKING_PASSWORD"] != old["MLFLOW_TRACKING_PASSWORD"]
    if stage in ("users.update", "service update", "revision start", "login check"):
        assert versions(fake, SECRET_MLFLOW) == [("1", "DISABLED"), ("2", "DESTROYED"), ("3", "ENABLED")]
    assert cli("credentials", "rotate").exit_code == 0
    assert_converged(fake, double)


def _pinned_value(fake, secret_id: str) -> str:
    number = pinned(fake, secret_id)
    found = next(
        v
        for v in fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{secret_id}"]
        if v["name"].endswith(f"/{number}")
    )
    return found["data"].decode()


def test_rotate_without_a_deployment_says_to_run_up(fake):
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    assert "mlflow-gcp up" in result.stderr
    assert fake.mutating_requests() == []


def test_rotate_on_an_incomplete_deployment_changes_nothing(fake, double):
    from mlflow_gcp.gcp.clients import Clients

    Clients(PROJECT).vpc_access().delete_connector(
        name=f"projects/{PROJECT}/locations/europe-west1/connectors/vpc-connector-mlflow"
    )
    fake.clear_log()
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    assert "not complete" in result.stderr and "nothing was rotated" in result.stderr
    assert fake.mutating_requests() == []
    assert team_login_works()


def test_a_service_on_latest_versions_is_pinned_before_a_version_is_added(fake, floating):
    """With `latest`, an instance starting mid-rotation would take the new password before it is applied."""
    old = credentials()
    fake.fail(400, api="sqladmin", method="PUT", path_contains="/users")  # stop the rotation after the add
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    assert pinned(fake, SECRET_MLFLOW) == "1" and pinned(fake, SECRET_MYSQL) == "1"
    env = fake.run_service("mlflow")["template"]["containers"][0]["env"]
    assert all(
        e["valueSource"]["secretKeyRef"]["version"] == "1"
        for e in env
        if "valueSource" in e and e["valueSource"]["secretKeyRef"]["secret"] in ROTATE_SECRETS
    )
    assert credentials() == old and team_login_works()
    assert cli("credentials", "rotate").exit_code == 0
    assert_converged(fake, floating)


def test_rotate_refuses_before_any_change_when_the_live_image_is_gone_from_the_registry(fake, double):
    """The image the service runs was deleted from Artifact Registry (by hand, or a cleanup policy): a rotation
    keeps that image, and no revision of it could start. Refused before anything is written, saying to run `up`
    (which builds it again); after `up`, the rotation works."""
    from mlflow_gcp.gcp.clients import Clients

    image = fake.run_service("mlflow")["template"]["containers"][0]["image"]
    assert fake.registry_holds(image)
    package = f"projects/{PROJECT}/locations/europe-west1/repositories/mlflow/packages/mlflow-server"
    Clients(PROJECT).artifact_registry().delete_package(name=package).result()
    assert fake.registry_holds(image) is False
    fake.run_pulls_images = True  # as Cloud Run: a revision of an image it cannot pull fails
    old = credentials()
    fake.clear_log()
    result = cli("credentials", "rotate")
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "is no longer in Artifact Registry" in text and "Nothing was changed" in text, text
    assert "mlflow-gcp up" in text
    assert fake.mutating_requests() == []
    assert credentials() == old and team_login_works()
    assert cli("up").exit_code == 0 and fake.registry_holds(image)
    assert cli("credentials", "rotate").exit_code == 0
    assert_converged(fake, double)


def test_the_registry_name_of_an_image():
    from mlflow_gcp.resources.registry_image import registry_name

    repo = "projects/p/locations/europe-west1/repositories/mlflow/packages"
    assert registry_name("europe-west1-docker.pkg.dev/p/mlflow/mlflow-server:abc") == f"{repo}/mlflow-server/tags/abc"
    digest = "sha256:" + "0" * 64
    assert registry_name(f"europe-west1-docker.pkg.dev/p/mlflow/a/b:t@{digest}") == f"{repo}/a%2Fb/versions/{digest}"
    assert registry_name("gcr.io/p/mlflow:abc") is None
    assert registry_name("europe-west1-docker.pkg.dev/p/mlflow/mlflow-server") is None  # no tag: not checked
