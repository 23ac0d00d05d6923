"""Step `database` against the fake Cloud SQL Admin, Secret Manager and (for its prerequisites) network APIs."""

from __future__ import annotations

import threading
import time

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError, NameTakenError, OperationFailedError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from tests.helpers import ALL_APIS_ENABLED, assert_rerun_sends_nothing, run_steps, settings

INSTANCE = "mlflow-tracking-database"
NETWORK = "projects/demo-project/global/networks/default"


@pytest.fixture
def gcp(fake):
    fake.enabled |= ALL_APIS_ENABLED
    return fake


@pytest.fixture
def networked(gcp):
    run_steps("network")
    gcp.clear_log()
    return gcp


def sql_mutations(fake):
    return [r for r in fake.mutating_requests() if r.api == "sqladmin"]


def test_first_run_creates_everything_as_specified(networked):
    fake = networked
    [result] = run_steps("database")
    assert result.status is Status.CREATED
    assert [(c.resource, c.action) for c in result.changes] == [
        ("secret mysql-credentials", "create"),
        (f"Cloud SQL instance {INSTANCE}", "create"),
        ("MySQL database mlflow_tracking_database", "create"),
        ("MySQL database mlflow_auth_database", "create"),
    ]
    instance = fake.sql_instances[INSTANCE]
    assert instance["state"] == "RUNNABLE"
    assert instance["databaseVersion"] == "MYSQL_8_4"
    assert instance["region"] == "europe-west1"
    settings_ = instance["settings"]
    assert settings_["tier"] == "db-f1-micro"
    assert settings_["edition"] == "ENTERPRISE"
    assert settings_["ipConfiguration"]["ipv4Enabled"] is False
    assert settings_["ipConfiguration"]["privateNetwork"] == NETWORK
    assert settings_["backupConfiguration"]["enabled"] is True
    assert settings_["backupConfiguration"]["binaryLogEnabled"] is True
    assert settings_["deletionProtectionEnabled"] is True
    assert settings_["storageAutoResize"] is True
    assert settings_["userLabels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    assert [a["type"] for a in instance["ipAddresses"]] == ["PRIVATE"]
    # the password went to Secret Manager before Cloud SQL, and Cloud SQL got that one
    login, password = fake.secret_value("mysql-credentials").split(":", 1)
    assert login == "root" and len(password) >= 24
    assert fake.sql_users[INSTANCE] == [{"name": "root", "host": "%", "password": password}]
    secret_add = next(i for i, r in enumerate(fake.log) if r.path.endswith(":addVersion"))
    sql_insert = next(i for i, r in enumerate(fake.log) if r.api == "sqladmin" and r.method == "POST")
    assert secret_add < sql_insert
    for name in ("mlflow_tracking_database", "mlflow_auth_database"):
        db = fake.sql_databases[INSTANCE][name]
        assert (db["charset"], db["collation"]) == ("utf8mb4", "utf8mb4_0900_ai_ci")


def test_outputs(networked):
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    run_step(BY_NAME["network"], ctx)
    run_step(BY_NAME["database"], ctx)
    outputs = ctx.outputs.as_dict()
    private = next(a["ipAddress"] for a in networked.sql_instances[INSTANCE]["ipAddresses"])
    assert outputs["database.private_ip"] == private
    assert private.startswith("10.")
    assert outputs["database.connection_name"] == f"demo-project:europe-west1:{INSTANCE}"
    assert outputs["database.instance"] == INSTANCE
    assert ctx.secret_values["mysql-credentials"].startswith("root:")


def test_second_run_is_unchanged_and_cheap(networked):
    run_steps("database")
    assert_rerun_sends_nothing(networked, "database", prerequisites=False)
    assert len(networked.requests()) <= 7  # the secret (record, versions, value), instance, 2 databases, users


def test_dry_run_lists_changes_and_sends_nothing(networked):
    [result] = run_steps("database", mode=Mode.PLAN)
    assert result.planned
    assert [c.action for c in result.changes] == ["create"] * 5
    assert networked.mutating_requests() == []
    # children of the missing instance are not read
    assert [r.path for r in networked.requests(api="sqladmin")] == [f"/v1/projects/demo-project/instances/{INSTANCE}"]


def test_dry_run_on_an_empty_project(gcp):
    results = run_steps("network", "database", mode=Mode.PLAN, network="new-vpc")
    assert all(r.planned for r in results)
    assert gcp.mutating_requests() == []


def test_tier_change_patches_only_the_tier(networked):
    run_steps("database")
    networked.clear_log()
    [result] = run_steps("database", db_tier="db-g1-small")
    assert [(c.resource, c.action, c.fields) for c in result.changes] == [
        (f"Cloud SQL instance {INSTANCE}", "update", ("tier",))
    ]
    [patch] = sql_mutations(networked)
    assert patch.method == "PATCH"
    import json

    assert json.loads(patch.body) == {"settings": {"tier": "db-g1-small"}}
    assert networked.sql_instances[INSTANCE]["settings"]["tier"] == "db-g1-small"


def test_drift_in_owned_fields_is_repaired(networked):
    run_steps("database")
    live = networked.sql_instances[INSTANCE]["settings"]
    live["deletionProtectionEnabled"] = False
    live["backupConfiguration"]["binaryLogEnabled"] = False
    live["ipConfiguration"]["ipv4Enabled"] = True
    [plan] = run_steps("database", mode=Mode.PLAN)
    assert plan.changes[0].fields == ("deletionProtectionEnabled", "backupConfiguration", "ipv4Enabled")
    run_steps("database")
    assert live is not networked.sql_instances[INSTANCE]["settings"]
    live = networked.sql_instances[INSTANCE]["settings"]
    assert live["deletionProtectionEnabled"] is True
    assert live["backupConfiguration"]["binaryLogEnabled"] is True
    assert live["ipConfiguration"]["ipv4Enabled"] is False
    networked.clear_log()
    assert run_steps("database")[0].status is Status.UNCHANGED


def test_version_change_is_refused_clearly(networked):
    run_steps("database")
    networked.clear_log()
    with pytest.raises(MlflowGcpError, match="--db-version MYSQL_8_4"):
        run_steps("database", db_version="MYSQL_8_0")
    assert networked.mutating_requests() == []


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried(networked, status):
    networked.fail(status, api="sqladmin", times=1)
    networked.fail(status, api="sqladmin", method="POST", times=1)
    networked.fail(status, api="sqladmin", path_contains="/operations/", times=1)
    [result] = run_steps("database")
    assert result.status is Status.CREATED
    assert networked.sql_instances[INSTANCE]["state"] == "RUNNABLE"


def test_failed_create_shows_googles_message(gcp):
    # no private services connection on the network: Cloud SQL's create operation fails
    run_steps("network", network="bare-vpc")
    del gcp.sn_connections["bare-vpc"]
    with pytest.raises(OperationFailedError, match="Service Networking connection"):
        run_steps("database", network="bare-vpc", prerequisites=False)
    assert INSTANCE not in gcp.sql_instances


def test_failed_database_operation_shows_googles_message(networked):
    networked.sql_fail_next("sqladmin.database", "Error 1044: Access denied for user 'root'@'%' to database 'x'")
    with pytest.raises(OperationFailedError, match="Access denied"):
        run_steps("database")


def test_reserved_name_suggests_another(networked):
    networked.sql_reserved.add(INSTANCE)
    with pytest.raises(NameTakenError, match="--db-instance"):
        run_steps("database")


def insert_instance() -> None:
    """The instance asked of Cloud SQL as the step asks for it, as by a run interrupted once its insert was sent."""
    body = {
        "name": INSTANCE,
        "region": "europe-west1",
        "databaseVersion": "MYSQL_8_4",
        "settings": {"tier": "db-f1-micro", "ipConfiguration": {"ipv4Enabled": False, "privateNetwork": NETWORK}},
    }
    Clients("demo-project").sqladmin().instances().insert(project="demo-project", body=body).execute()


def test_interrupted_create_is_waited_for(networked):
    networked.latency["sqladmin.create"] = 0.4
    insert_instance()
    assert networked.sql_instances[INSTANCE]["state"] == "PENDING_CREATE"
    [result] = run_steps("database")
    actions = {c.resource: c.action for c in result.changes}
    # found, waited for, then its owned fields brought in line
    assert actions[f"Cloud SQL instance {INSTANCE}"] == "update"
    assert networked.sql_instances[INSTANCE]["settings"]["deletionProtectionEnabled"] is True


def test_maintenance_and_running_operation_are_waited_for(networked):
    run_steps("database")
    networked.latency["sqladmin.maintenance"] = 0.3
    networked.sql_set_state(INSTANCE, "MAINTENANCE")
    [result] = run_steps("database")
    assert result.status is Status.UNCHANGED
    # someone else's operation runs (a backup, say): our patch gets 409 operationInProgress and is retried
    networked.sql_busy[INSTANCE] = "backup-operation"
    networked.clear_log()

    def finish_after_a_refusal():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r.status == 409 for r in networked.requests(api="sqladmin")):
                break
            time.sleep(0.01)
        networked.sql_busy.pop(INSTANCE, None)

    releaser = threading.Thread(target=finish_after_a_refusal)
    releaser.start()
    run_steps("database", db_tier="db-g1-small")
    releaser.join()
    assert any(r.status == 409 for r in networked.requests(api="sqladmin"))
    assert networked.sql_instances[INSTANCE]["settings"]["tier"] == "db-g1-small"


def test_existing_user_password_is_never_reset(networked):
    run_steps("database")
    networked.sql_users[INSTANCE][0]["password"] = "changed-by-hand"
    networked.clear_log()
    run_steps("database")
    assert networked.mutating_requests() == []
    assert networked.sql_users[INSTANCE][0]["password"] == "changed-by-hand"


def test_other_user_is_created_with_the_secret_password(networked):
    [result] = run_steps("database", db_user="mlflow")
    assert ("MySQL user mlflow", "create") in [(c.resource, c.action) for c in result.changes]
    login, password = networked.secret_value("mysql-credentials").split(":", 1)
    assert login == "mlflow"
    assert {"name": "mlflow", "host": "%", "password": password} in networked.sql_users[INSTANCE]


def test_secret_for_another_user_is_a_clear_error(networked):
    run_steps("database")
    with pytest.raises(MlflowGcpError, match="--db-user root"):
        run_steps("database", db_user="mlflow")


def _delete_all(ctx: StepContext) -> list[str]:
    deleted = []
    resources = []
    for resource in BY_NAME["database"].resources(ctx.for_step("database")):
        resources.append(resource)
        resource.read()  # as down reads before deleting
    for resource in reversed(resources):
        current = resource.read()
        if current is not None and resource.kind != "secret":
            resource.delete(current)
            deleted.append(resource.label)
    return deleted


def test_delete_turns_off_protection_and_removes_the_instance(networked):
    run_steps("database")
    ctx = StepContext(settings=settings(), clients=Clients("demo-project"))
    deleted = _delete_all(ctx)
    assert deleted == [
        "MySQL user root",  # kept: root goes with the instance
        "MySQL database mlflow_auth_database",
        "MySQL database mlflow_tracking_database",
        f"Cloud SQL instance {INSTANCE}",
    ]
    assert INSTANCE not in networked.sql_instances
    assert _delete_all(ctx) == []
    # the name stays reserved for a week, as on Google
    with pytest.raises(NameTakenError):
        run_steps("database")


def test_concurrent_steps_use_separate_discovery_clients(networked):
    errors = []

    def run():
        try:
            run_steps("database", prerequisites=False)
        except Exception as e:
            errors.append(e)

    run_steps("database")
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_plan_on_a_project_without_the_apis(fake):
    # nothing enabled yet: the apis step would enable them; planning shows everything to create
    results = run_steps("network", "database", "connector", mode=Mode.PLAN)
    assert [len(r.changes) for r in results] == [3, 5, 1]
    assert fake.mutating_requests() == []


def test_plan_while_the_instance_is_being_created(networked):
    networked.latency["sqladmin.create"] = 30
    run_steps("database", mode=Mode.PLAN)  # warm-up: nothing exists
    insert_instance()
    networked.clear_log()
    [result] = run_steps("database", mode=Mode.PLAN)
    instance_state = next(r for r in result.resources if r.label.startswith("Cloud SQL instance"))
    assert instance_state.details["state"] == "PENDING_CREATE"
    assert not [r for r in networked.requests(api="sqladmin") if "/databases" in r.path or "/users" in r.path]
    assert networked.mutating_requests() == []
