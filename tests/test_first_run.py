"""`up` on a fresh project as Google really answers it (issue 7): grants that apply minutes later, a stale
`versions/latest`, an organization policy on resource locations. Each behaviour is an option of the fake."""

from __future__ import annotations

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME, prerequisites
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

REGION = "europe-west1"
SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/mlflow"
ALL_SECRETS = (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW, SECRET_FLASK_KEY)


def pinned_versions() -> dict[str, str]:
    env = Clients(PROJECT).run_services().get_service(name=SERVICE).template.containers[0].env
    return {e.value_source.secret_key_ref.secret: e.value_source.secret_key_ref.version for e in env if e.value_source}


def latest_numbers(fake) -> dict[str, str]:
    versions = fake.state["secret_versions"]
    return {s: versions[f"projects/{PROJECT}/secrets/{s}"][-1]["name"].rsplit("/", 1)[-1] for s in ALL_SECRETS}


def test_the_secrets_and_their_grants_do_not_wait_for_the_database():
    early = BY_NAME["secret-access"]
    assert "database" not in {step.name for step in prerequisites((early.name,))}
    assert early.name in {step.name for step in prerequisites(("deploy",))}


def test_secret_grants_that_apply_minutes_later_are_waited_for_on_deploy(fake, container_dir):
    # Each new grant is refused by Cloud Run's first 3 checks of the revision's access to the secret.
    fake.grant_propagation = 3
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert "waiting for the secret accessor grants to apply" in result.output
    refused = [r for r in fake.requests(api="run", mutating=True) if r.status == 400]
    assert refused, "Cloud Run refused the first revision"
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


def test_a_stale_latest_version_never_pins_an_old_version(fake, container_dir):
    # After each addVersion, the next 3 reads of versions/latest still answer the version before (or 404).
    fake.secret_latest_stale_reads = 3
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert pinned_versions() == latest_numbers(fake)
    # A setting that changes the server's settings adds mlflow-env version 2: the service pins 2, not 1.
    result = cli("up", "--db-name", "runs_database", "--move-to-new-resources")
    assert result.exit_code == 0, result.output
    assert latest_numbers(fake)[SECRET_ENV] == "2"
    assert pinned_versions() == latest_numbers(fake)


def test_a_location_policy_refusing_global_names_the_setting_then_user_managed_replication_works(
    fake, container_dir
):
    fake.secret_allowed_locations = {REGION}  # constraints/gcp.resourceLocations without `global`
    result = cli("up")
    assert result.exit_code == 1
    assert "constraints/gcp.resourceLocations" in result.output
    assert "--secret-replication user-managed" in result.output
    assert "MLFLOW_GCP_SECRET_REPLICATION=user-managed" in result.output
    assert "Traceback" not in result.output

    result = cli("up", "--secret-replication", "user-managed")
    assert result.exit_code == 0, result.output
    for secret in ALL_SECRETS:
        replication = fake.state["secrets"][f"projects/{PROJECT}/secrets/{secret}"]["replication"]
        assert replication == {"userManaged": {"replicas": [{"location": REGION}]}}, secret


def test_up_with_every_first_run_behaviour_at_once_deploys_and_a_second_up_sends_nothing(fake, container_dir):
    """A new project in a secure-by-default organisation, as Google answers it, all behaviours on at once."""
    fake.activation_seconds = 1.2  # SERVICE_DISABLED for 1.2 s after each enable (bound: 30 s in tests)
    fake.compute_default_network_lag = 3  # `default` appears a while after Compute is enabled
    fake.iam_policy_lag = 3  # the new service account's own policy answers 404 for a while
    fake.iam_invisible_for = 3  # grants naming the new account elsewhere answer 400 "does not exist"
    fake.secure_by_default_org = True  # the build can do only what the build account's own grants allow
    fake.grant_propagation = 3  # Cloud Run refuses the revision, and builds fail, until the grants apply
    fake.secret_latest_stale_reads = 2  # versions/latest lags behind addVersion
    fake.secret_allowed_locations = {REGION}  # constraints/gcp.resourceLocations without `global`
    fake.cloudbuild_refused_regions = {REGION}  # a new project's regional builds are refused
    fake.sn_producer_lingers = True  # (for `down`; `up` never meets it)
    result = cli("up", "--secret-replication", "user-managed")
    assert result.exit_code == 0, result.output
    assert "MLflow is ready at https://" in result.output
    assert pinned_versions() == latest_numbers(fake)
    builds = fake.builds()
    assert [b["status"] for b in builds] == ["FAILURE"] * (len(builds) - 1) + ["SUCCESS"]
    assert len(builds) > 1, "the first builds ran before the build account's grants applied"
    assert fake.state["most_builds_at_once"] == 1
    refused_region = [r for r in fake.requests(api="cloudbuild", mutating=True) if r.status == 400]
    assert len(refused_region) == 1, "the builds after the first go to `global` at once"

    fake.secret_latest_settle()  # minutes later: `latest` has caught up
    fake.clear_log()
    again = cli("up", "--secret-replication", "user-managed")
    assert again.exit_code == 0, again.output
    assert [(r.method, r.api, r.path) for r in fake.mutating_requests()] == []
