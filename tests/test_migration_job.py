"""The migration job (issue 24): resources/migration_job.py against the fake Cloud Run jobs and Cloud Logging
(tests/fake_gcp/apis/run_jobs.py): the job made from the service's template and left alone when unchanged, an
execution run and waited for, its result read from its log lines, and Google's failures and lost answers."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlflow_gcp.errors import ApiDisabledError, MlflowGcpError, PermissionDeniedError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources import migration_job
from mlflow_gcp.resources.migration_job import MigrationJob, job_body
from mlflow_gcp.service_spec import ServiceInputs, build_service
from tests.fake_gcp.apis.run_jobs import JOB, JOBS, RESULT_PREFIX
from tests.helpers import ALL_APIS_ENABLED, settings

IMAGE = "europe-west1-docker.pkg.dev/demo-project/mlflow/mlflow:3-18-0"
CONNECTOR = "projects/demo-project/locations/europe-west1/connectors/vpc-connector-mlflow"
MIGRATED = {
    "outcome": "migrated",
    "mlflow": "3.18.0",
    "tracking_before": "1b5f0d9ad7c1",
    "tracking_after": "6c2a1e9f0b47",
    "auth_before": "0a3a4c6d8e21",
    "auth_after": "0a3a4c6d8e21",
    "error": None,
}


def template(image: str = IMAGE) -> dict:
    config = settings()
    return build_service(
        config, ServiceInputs(image, CONNECTOR, ("https://mlflow-123456789012.europe-west1.run.app",))
    )["template"]


@pytest.fixture
def jobs(fake):
    fake.enabled |= ALL_APIS_ENABLED
    return fake


def migration() -> MigrationJob:
    config = settings()
    return MigrationJob(config, Clients(config.project))


def sent(fake, method: str, route: str) -> int:
    return sum(1 for r in fake.requests(api="run") if r.method == method and r.route == route and r.status < 400)


def long_execution(fake) -> tuple[MigrationJob, str]:
    """The job made and an execution of it started that runs for an hour unless a test ends it: the job, and the
    execution's name."""
    fake.latency["run.execution"] = 3600
    job = migration()
    job.ensure(template())
    return job, job.start()


def result_line(result: dict) -> str:
    return RESULT_PREFIX + json.dumps(result)


def test_the_job_is_the_service_template_run_once_with_migrate(jobs):
    migration().ensure(template())

    job = jobs.run_jobs.job("mlflow-migrate")
    assert job["labels"] == {"managed-by": "mlflow-gcp"}
    assert job["template"]["taskCount"] == 1
    task = job["template"]["template"]
    assert task["maxRetries"] == 0 and task["timeout"] == "1800s"
    assert task["serviceAccount"] == "run-mlflow@demo-project.iam.gserviceaccount.com"
    assert task["vpcAccess"] == {"connector": CONNECTOR, "egress": "PRIVATE_RANGES_ONLY"}
    container = task["containers"][0]
    assert container["image"] == IMAGE and container["args"] == ["migrate"]
    assert "ports" not in container and "startupProbe" not in container
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    secrets = {e["name"]: e["valueSource"]["secretKeyRef"]["secret"] for e in container["env"] if "valueSource" in e}
    assert secrets["MYSQL_CREDENTIALS"] == "mysql-credentials"
    assert all("value" not in e for e in container["env"] if e["name"] != "MLFLOW_GCP_SERVICE_URLS")


def test_an_unchanged_job_is_not_sent_again_and_a_changed_one_is_replaced(jobs):
    job = migration()
    job.ensure(template())
    jobs.clear_log()

    job.ensure(template())
    assert not jobs.mutating_requests()

    job.ensure(template(IMAGE.replace("3-18-0", "3-19-0")))
    assert sent(jobs, "PATCH", JOB) == 1
    assert jobs.run_jobs.job("mlflow-migrate")["template"]["template"]["containers"][0]["image"].endswith("3-19-0")


def test_a_job_changed_by_hand_is_put_back(jobs):
    """maxRetries set to 3 in the console: a retried half-migration would run on a half-migrated schema."""
    job = migration()
    job.ensure(template())
    jobs.state["run_jobs"][job.path]["template"]["template"]["maxRetries"] = 3

    job.ensure(template())

    assert sent(jobs, "PATCH", JOB) == 1
    assert jobs.run_jobs.job("mlflow-migrate")["template"]["template"]["maxRetries"] == 0


@pytest.mark.parametrize("how", ["503", "reset"])
def test_a_create_whose_answer_is_lost_makes_one_job_and_no_patch(jobs, how):
    jobs.lose_answer(how, api="run", method="POST", route=JOBS)

    migration().ensure(template())

    assert jobs.run_jobs.job("mlflow-migrate") is not None
    assert sent(jobs, "PATCH", JOB) == 0


def test_a_patch_whose_answer_is_lost_is_sent_again_harmlessly(jobs):
    job = migration()
    job.ensure(template())
    jobs.lose_answer("503", api="run", method="PATCH", route=JOB)

    job.ensure(template(IMAGE.replace("3-18-0", "3-19-0")))

    assert jobs.run_jobs.job("mlflow-migrate")["template"]["template"]["containers"][0]["image"].endswith("3-19-0")


def test_run_and_wait_reads_the_result_from_the_executions_log_lines(jobs):
    lines = ["Upgrading the tracking schema", result_line(MIGRATED)]
    jobs.run_jobs.outcome = lambda job, execution: ("succeeded", lines)
    jobs.latency["run.execution"] = 0.2
    job = migration()
    job.ensure(template())
    said: list[str] = []

    name = job.start()
    run = job.wait(name, said.append)

    assert run.name == name and run.state == "succeeded"
    assert run.exit_result == MIGRATED
    assert run.log_uri.startswith("https://console.cloud.google.com/logs/")
    assert name.rsplit("/", 1)[-1] in said[0]
    query = json.loads(next(r for r in jobs.requests() if r.api == "logging").body)["filter"]
    assert 'resource.type="cloud_run_job"' in query
    assert f'labels."run.googleapis.com/execution_name"="{name.rsplit("/", 1)[-1]}"' in query


def test_the_result_of_another_execution_is_not_taken(jobs):
    job = migration()
    job.ensure(template())
    first = job.start()
    assert job.wait(first, lambda _: None).exit_result["outcome"] == "current"
    jobs.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line(MIGRATED)])

    second = job.wait(job.start(), lambda _: None)

    assert second.name != first and second.exit_result == MIGRATED


def test_a_failed_migration_is_failed_with_its_result_and_googles_message(jobs):
    failed = {**MIGRATED, "outcome": "failed", "tracking_after": None, "error": "Table 'secrets' already exists"}
    jobs.run_jobs.outcome = lambda job, execution: ("failed", ["Traceback ...", result_line(failed)])
    job = migration()
    job.ensure(template())

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "failed"
    assert run.exit_result == failed
    assert "failed with message" in run.message


def test_a_container_that_died_before_its_result_line_is_failed_without_a_result(jobs):
    """The container's exit line tells that no result line is coming: no waiting out the log bound for it."""
    jobs.run_jobs.outcome = lambda job, execution: ("failed", ["Killed"])
    job = migration()
    job.ensure(template())

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "failed" and run.exit_result is None
    assert len([r for r in jobs.requests() if r.api == "logging"]) == 1


def logging_reads(fake) -> int:
    return len([r for r in fake.requests() if r.api == "logging"])


@pytest.mark.parametrize(
    "reason, detail",
    [
        ("SECRETS_ACCESS_CHECK_FAILED", "Permission denied on secret: projects/demo-project/secrets/mlflow-env"),
        ("CONTAINER_MISSING", f"Image '{IMAGE}' not found."),
        ("VPC_NETWORK_NOT_FOUND", "VPC connector vpc-connector-mlflow is not ready."),
    ],
)
def test_an_execution_whose_container_never_started_ends_at_once_with_googles_message(jobs, reason, detail):
    """Cloud Run could not start the container: it wrote no line, not even its exit. The execution says so; the
    result is read once instead of waiting out the log bound for lines that never come."""
    jobs.latency["logging.ingest"] = 60.0  # lines late: only the execution can tell that none is coming
    jobs.run_jobs.outcome = lambda job, execution: ("not_started", [])
    jobs.run_jobs.start_failure = (reason, detail)
    job = migration()
    job.ensure(template())

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "failed" and run.exit_result is None
    assert "failed to start" in run.message and detail in run.message
    assert logging_reads(jobs) == 1


def test_a_container_that_never_started_is_told_by_its_task_when_the_conditions_give_no_reason(jobs, monkeypatch):
    """The execution's conditions say only "Task ... failed" (no CommonReason): the task's last attempt, failed with
    neither an exit code nor a signal, says the container never ran, so no line is waited for."""
    monkeypatch.setattr(migration_job, "LOG_INGEST_SECONDS", 5.0)
    jobs.latency["logging.ingest"] = 60.0
    jobs.run_jobs.outcome = lambda job, execution: ("not_started", [])
    jobs.run_jobs.condition_reasons = False
    job = migration()
    job.ensure(template())

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "failed" and run.exit_result is None
    assert "Permission denied on secret" in run.message
    assert logging_reads(jobs) == 1


def test_a_container_that_ran_and_exited_without_a_result_line_still_waits_for_late_lines(jobs, monkeypatch):
    """Exited non-zero with its lines still on their way to Logging: waited for up to the bound (made small: 2 s at
    the tests' wait scale; at 0.2 s a loaded machine spent the bound on the first read, and read once)."""
    monkeypatch.setattr(migration_job, "LOG_INGEST_SECONDS", 20.0)
    jobs.latency["logging.ingest"] = 60.0
    jobs.run_jobs.outcome = lambda job, execution: ("failed", ["Killed"])
    job = migration()
    job.ensure(template())
    said: list[str] = []

    run = job.wait(job.start(), said.append)

    assert run.state == "failed" and run.exit_result is None
    assert "exited with an error" in run.message
    assert logging_reads(jobs) > 1
    assert any("Cloud Logging" in line for line in said)


def test_log_lines_that_reach_logging_late_are_waited_for(jobs):
    jobs.latency["logging.ingest"] = 0.5
    job = migration()
    job.ensure(template())
    said: list[str] = []

    run = job.wait(job.start(), said.append)

    assert run.state == "succeeded" and run.exit_result["outcome"] == "current"
    assert any("Cloud Logging" in line for line in said)


def test_an_execution_google_cancels_is_cancelled(jobs):
    jobs.run_jobs.outcome = lambda job, execution: ("cancelled", [])
    job = migration()
    job.ensure(template())

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "cancelled" and run.exit_result is None


def test_an_execution_cancelled_by_hand_while_waited_for_is_cancelled(jobs):
    job, name = long_execution(jobs)

    run = job.wait(name, lambda _: jobs.run_jobs.cancel(name.rsplit("/", 1)[-1]))

    assert run.state == "cancelled"
    assert jobs.run_jobs.executions("mlflow-migrate")[0]["cancelledCount"] == 1


@pytest.mark.parametrize("how", ["503", "reset"])
def test_a_run_whose_answer_is_lost_starts_one_execution(jobs, how):
    jobs.latency["run.execution"] = 0.2
    job = migration()
    job.ensure(template())
    jobs.lose_answer(how, api="run", method="POST", route=JOB + ":run")

    name = job.start()

    executions = jobs.run_jobs.executions("mlflow-migrate")
    assert [e["name"] for e in executions] == [name]
    assert job.wait(name, lambda _: None).state == "succeeded"


def test_an_interrupted_wait_leaves_the_execution_running_and_a_rerun_waits_for_it(jobs):
    job, name = long_execution(jobs)

    def interrupt(_: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.wait(name, interrupt)
    assert job.latest().state == "running"

    again = migration()
    assert again.start() == name
    assert again.wait(name, lambda _: jobs.run_jobs.finish(name.rsplit("/", 1)[-1])).state == "succeeded"
    assert len(jobs.run_jobs.executions("mlflow-migrate")) == 1


def test_a_running_execution_of_another_image_is_not_taken_for_ours(jobs):
    job, _ = long_execution(jobs)
    job.ensure(template(IMAGE.replace("3-18-0", "3-19-0")))

    with pytest.raises(MlflowGcpError, match="another image"):
        job.start()


def test_latest_is_none_without_a_job_then_the_newest_execution(jobs):
    job = migration()
    assert job.latest() is None
    job.ensure(template())
    assert job.latest() is None

    run = job.wait(job.start(), lambda _: None)

    latest = job.latest()
    assert latest.name == run.name and latest.state == "succeeded" and latest.exit_result["outcome"] == "current"
    created = jobs.run_jobs.executions("mlflow-migrate")[0]["createTime"]
    assert latest.created == run.created == dt.datetime.fromisoformat(created.replace("Z", "+00:00"))


def test_an_execution_deleted_while_waited_for_is_a_clear_error(jobs):
    job, name = long_execution(jobs)

    def delete(_: str) -> None:
        Clients("demo-project").run_executions().delete_execution(name=name)

    with pytest.raises(MlflowGcpError, match="is gone"):
        job.wait(name, delete)


def test_a_disabled_cloud_run_api_is_named(jobs):
    jobs.enabled.discard("run.googleapis.com")

    with pytest.raises(ApiDisabledError, match=r"run\.googleapis\.com"):
        migration().ensure(template())


def test_a_missing_permission_is_named(jobs):
    jobs.fail(
        403,
        times=1,
        api="run",
        method="POST",
        reason="IAM_PERMISSION_DENIED",
        metadata={"permission": "run.jobs.create", "resource": "projects/demo-project/locations/europe-west1"},
        message="Permission 'run.jobs.create' denied on resource (or it may not exist).",
    )
    job = migration()
    with pytest.raises(PermissionDeniedError, match=r"run\.jobs\.create"):
        job.ensure(template())


def test_the_cloud_run_library_knows_every_field_of_the_job():
    from google.cloud import run_v2

    job = run_v2.Job.from_json(json.dumps(job_body(template(), {"managed-by": "mlflow-gcp"})))  # strict
    assert job.template.template.max_retries == 0
    for read in ("conditions", "cancelled_count", "succeeded_count", "completion_time", "log_uri", "reconciling"):
        assert read in run_v2.Execution.meta.fields, read
    assert "execution_reason" in run_v2.Condition.meta.fields


def test_the_fake_refuses_to_cancel_a_finished_execution_and_answers_404_for_a_missing_one(jobs):
    from google.api_core import exceptions as gexc

    job = migration()
    job.ensure(template())
    run = job.wait(job.start(), lambda _: None)
    executions = Clients("demo-project").run_executions()

    with pytest.raises(gexc.BadRequest, match="already completed"):
        executions.cancel_execution(name=run.name).result()
    with pytest.raises(gexc.NotFound):
        executions.get_execution(name=run.name + "x")


def test_transient_errors_on_the_way_are_retried(jobs):
    job = migration()
    job.ensure(template())
    jobs.fail(503, times=2, api="run", method="GET", path_contains="/executions/")
    jobs.fail(429, times=1, api="run", method="POST", path_contains=":run")
    jobs.fail(500, times=2, api="logging")

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "succeeded" and run.exit_result["outcome"] == "current"
    assert len(jobs.run_jobs.executions("mlflow-migrate")) == 1


def test_logs_that_cannot_be_read_leave_the_result_unknown_and_say_why(jobs):
    """The caller lacks logging.logEntries.list: the execution's state is still known; the result is not."""
    job = migration()
    job.ensure(template())
    jobs.fail(403, times=1, api="logging", reason="IAM_PERMISSION_DENIED", message="Permission denied.")
    said: list[str] = []

    run = job.wait(job.start(), said.append)

    assert run.state == "succeeded" and run.exit_result is None
    assert any("could not be read from Cloud Logging" in line for line in said)


def test_a_job_deleted_by_hand_before_it_runs_is_a_clear_error(jobs):
    job = migration()
    job.ensure(template())
    Clients("demo-project").run_jobs().delete_job(name=job.path).result()

    with pytest.raises(MlflowGcpError, match="does not exist"):
        job.start()


@pytest.mark.parametrize("how", ["503", "reset"])
def test_delete_removes_the_job_and_its_executions_once(jobs, how):
    job = migration()
    assert job.delete() is False
    job.ensure(template())
    job.wait(job.start(), lambda _: None)
    jobs.lose_answer(how, api="run", method="DELETE", route=JOB)

    assert job.delete() is True

    assert jobs.run_jobs.job("mlflow-migrate") is None and not jobs.run_jobs.executions("mlflow-migrate")
    assert job.latest() is None


@pytest.mark.parametrize("seed", range(6))
def test_random_faults_make_one_job_and_one_execution(jobs, seed):
    """Chaos (tests/fake_gcp/chaos.py) on every request: transient errors before, lost answers after the commit."""
    from tests.fake_gcp.chaos import Chaos

    jobs.chaos = Chaos(seed, transient_rate=0.2, lost_rate=0.5)
    job = migration()
    job.ensure(template())
    job.ensure(template(IMAGE.replace("3-18-0", "3-19-0")))

    run = job.wait(job.start(), lambda _: None)

    assert run.state == "succeeded" and run.exit_result["outcome"] == "current"
    assert len(jobs.state["run_jobs"]) == 1 and len(jobs.run_jobs.executions("mlflow-migrate")) == 1
    image = jobs.run_jobs.executions("mlflow-migrate")[0]["template"]["containers"][0]["image"]
    assert image.endswith("3-19-0")


def test_interrupted_while_reading_the_result_a_rerun_reads_it(jobs):
    jobs.latency["logging.ingest"] = 0.5
    job = migration()
    job.ensure(template())
    name = job.start()

    def interrupt_when_waiting_for_logs(line: str) -> None:
        if "Cloud Logging" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.wait(name, interrupt_when_waiting_for_logs)

    latest = migration().latest()
    assert latest.name == name and latest.state == "succeeded" and latest.exit_result["outcome"] == "current"


@pytest.mark.parametrize(
    "fields,state",
    [
        ({"conditions": [{"type_": "Completed", "state": "CONDITION_PENDING"}], "running_count": 1}, "running"),
        ({"conditions": [{"type_": "Completed", "state": "CONDITION_SUCCEEDED"}], "succeeded_count": 1}, "succeeded"),
        ({"conditions": [{"type_": "Completed", "state": "CONDITION_FAILED"}], "failed_count": 1}, "failed"),
        (
            {"conditions": [{"type_": "Completed", "state": "CONDITION_FAILED", "execution_reason": "CANCELLED"}]},
            "cancelled",
        ),
        # Ended, its Completed condition not written yet: the counts tell.
        ({"completion_time": {"seconds": 1}, "task_count": 1, "succeeded_count": 1}, "succeeded"),
        ({"completion_time": {"seconds": 1}, "task_count": 1, "failed_count": 1}, "failed"),
        ({"completion_time": {"seconds": 1}, "task_count": 1, "cancelled_count": 1}, "cancelled"),
        ({}, "running"),
    ],
)
def test_the_state_of_an_execution(fields, state):
    from google.cloud import run_v2

    from mlflow_gcp.resources.migration_job import state_of

    assert state_of(run_v2.Execution(**fields)) == state


def test_the_job_takes_what_the_live_template_carries_that_a_task_needs(jobs):
    """A live service read back (to_json_dict) carries more than build_service: a container name, a secret mounted
    as a volume, the execution environment, Direct VPC egress with the connector cleared."""
    live = template()
    live["containers"][0]["name"] = "mlflow-1"
    live["containers"][0]["volumeMounts"] = [{"name": "creds", "mountPath": "/secrets"}]
    live["volumes"] = [{"name": "creds", "secret": {"secret": "mlflow-credentials", "items": [{"path": "c"}]}}]
    live["executionEnvironment"] = "EXECUTION_ENVIRONMENT_GEN2"
    live["vpcAccess"] = {
        "connector": "",
        "networkInterfaces": [{"network": "default", "subnetwork": "default"}],
        "egress": "PRIVATE_RANGES_ONLY",
    }
    live["annotations"] = {"mlflow-gcp/mlflow-version": "3.18.0"}
    job = migration()

    job.ensure(live)
    jobs.clear_log()
    job.ensure(live)

    assert not jobs.mutating_requests()
    task = jobs.run_jobs.job("mlflow-migrate")["template"]["template"]
    assert task["volumes"] == live["volumes"] and task["containers"][0]["volumeMounts"] == [
        {"name": "creds", "mountPath": "/secrets"}
    ]
    assert task["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"
    assert task["vpcAccess"]["networkInterfaces"] == [{"network": "default", "subnetwork": "default"}]


def test_a_job_whose_image_cannot_be_pulled_is_a_clear_error_and_a_rerun_sends_it_again(jobs):
    from mlflow_gcp.errors import OperationFailedError

    jobs.run_jobs.missing_images.add(IMAGE)
    job = migration()
    with pytest.raises(OperationFailedError, match="not found"):
        job.ensure(template())

    jobs.run_jobs.missing_images.clear()  # the image pushed at last
    job.ensure(template())
    run = job.wait(job.start(), lambda _: None)

    assert run.state == "succeeded"
    assert jobs.run_jobs.job("mlflow-migrate")["terminalCondition"]["state"] == "CONDITION_SUCCEEDED"
