"""Cloud Run Admin API v2: jobs (create, get, list, patch, delete, `:run`), their executions (get, list, cancel,
delete) and the executions' log lines in the fake Cloud Logging.

As Google's reference says (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs,
https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions, and the run_v2 protos of
google-cloud-run):
- create takes `jobId` (409 ALREADY_EXISTS when the name is in use), patch replaces the whole job (UpdateJobRequest
  has no update mask; `allowMissing` creates), delete removes it and its executions; each is a long-running
  operation whose metadata and response are the Job (latency `run.jobs`).
- `:run` creates an Execution at once and answers an operation whose metadata is that Execution; the operation is
  done when the execution has completed, with the Execution as response, or an error when it failed or was cancelled
  (the operation wait of https://github.com/GoogleCloudPlatform/terraform-google-cloud-run/issues/251 relies on it).
  `overrides` (containerOverrides args/env, taskCount, timeout) apply to that execution only: env is merged, args
  replace.
- An Execution runs for the latency `run.execution` (tests scale it like any other), `reconciling` and
  `runningCount: 1` meanwhile; then `completionTime`, `succeededCount` or `failedCount`, and the condition of type
  `Completed` in state CONDITION_SUCCEEDED or CONDITION_FAILED (`executionReason` NON_ZERO_EXIT_CODE).
  `:cancel` of a running execution ends it with `cancelledCount: 1` and `executionReason` CANCELLED; of a finished
  one it is refused with 400 FAILED_PRECONDITION (the fake's choice: the reference does not say). The conditions'
  messages are modelled on gcloud's output ("Task migrate-vnttt-task0 failed with message: The container exited
  with an error.", https://github.com/googlecodelabs/feedback/issues/1369); the tool reads states and counts.
- `logUri` points at the Logs Explorer with the execution's filter. The container's lines go to Cloud Logging as
  entries of resource type `cloud_run_job` (labels job_name, location, project_id) with the entry labels
  `run.googleapis.com/execution_name`, `.../task_index`, `.../task_attempt`, on the log run.googleapis.com/stderr,
  as gcloud's `run jobs executions logs read` filters them; the exit is reported on run.googleapis.com/varlog/system
  ("Container called exit(1).", as public Cloud Run job logs show it, e.g. in Airflow's CloudRunExecuteJobOperator
  tests). Entries reach the Logging API after the latency `logging.ingest`: a reader right
  after the completion may not see them yet (https://cloud.google.com/logging/docs/view/logs-explorer-interface:
  "it might take a few minutes for the log entries to appear").

Test controls (`fake.run_jobs`):
- `outcome(job, execution) -> (status, lines[, exit_code])`: how an execution ends, called when it completes; the
  container's exit code defaults to 0 when it succeeded and 1 when it failed (the image's `migrate` exits 3 on a
  schema newer than it knows); status is
  "succeeded", "failed", "cancelled" (Google stops the execution: a job's task deadline, an out-of-memory kill
  reported as cancelled) or "not_started" (see `start_failure`; its lines are ignored). Default: succeeded, with
  the line of a migration that found both schemas current.
- `start_failure = (reason, detail)`: how an execution whose outcome is "not_started" fails: Cloud Run could not
  start its task's container (a secret version it cannot access, an image it cannot pull at execution time, a VPC
  connector not ready). The container writes nothing, so there is no line in Logging, not even the exit line. As
  Google's reference describes the parts: the task's `lastAttemptResult` has no `exitCode` ("This may be unset if
  the container was unable to exit cleanly with a code due to some other failure. See status field",
  https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions.tasks#TaskAttemptResult)
  and a non-OK `status`; `failedCount: 1`; the condition `reason` is one of Condition.CommonReason
  (SECRETS_ACCESS_CHECK_FAILED, CONTAINER_MISSING, CONTAINER_PERMISSION_DENIED, VPC_NETWORK_NOT_FOUND, ...,
  https://cloud.google.com/run/docs/reference/rest/v2/Condition#CommonReason). The fake's choices where the
  reference is silent: the `Started` condition and the `Completed` condition both CONDITION_FAILED with that
  `reason` and no `executionReason` (NON_ZERO_EXIT_CODE is for a container that exited), the message
  "Task {execution}-task0 failed to start: {detail}" (the secret message as Cloud Run words a revision that cannot
  read a secret: https://github.com/sourcegraph/sourcegraph-public-snapshot/pull/59045).
- Each execution has its task (the job runs one), served by `executions.tasks` get and list
  (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions.tasks), named
  `{execution}-task0`, index 0, `retried` 0 (the job allows no retry). Once the execution ends, its
  `lastAttemptResult` holds the container's `exitCode` and a `status` (code 0 when the attempt succeeded), or, for
  a container that never started, no `exitCode` and the status of why (as quoted above); its `Completed` condition
  follows the execution's.
- `condition_reasons` (default True): the failed conditions of a container that never started carry the
  CommonReason. False: they say only the message ("Task ... failed"), as gcloud's output of such executions shows
  it (https://github.com/googlecodelabs/feedback/issues/1369): only the task's attempt result says that the container
  never ran. Nothing in the reference promises the reason on the execution's conditions.
- `cancel(execution_id)`: someone cancels the execution in the console.
- `finish(execution_id)`: the execution ends now (as `outcome` says), whatever its latency.
- `job(name)`, `executions(job)`: the stored job (REST JSON) or None; a job's executions, newest first.
- `missing_images`: images that cannot be pulled. A job created or replaced with one ends its operation in error
  and its `terminalCondition` is CONDITION_FAILED, reason CONTAINER_MISSING, "Image '...' not found." (as Prefect
  saw it: https://github.com/PrefectHQ/prefect/pull/21712); `:run` of a job in that state is refused with 400
  FAILED_PRECONDITION (the fake's choice: how Google refuses it is not documented).
"""

from __future__ import annotations

import copy
import json
import random
import string
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from tests.fake_gcp.apis.run import RESOURCE_OUTPUT_ONLY, validate_containers
from tests.fake_gcp.server import ApiError, FakeGoogle, Request, already_exists, not_found, parse_message

JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
JOBS = "/v2/projects/{project}/locations/{location}/jobs"
JOB = JOBS + "/{job}"
EXECUTIONS = JOB + "/executions"
EXECUTION = EXECUTIONS + "/{execution}"
TASKS = EXECUTION + "/tasks"
TASK = TASKS + "/{task}"
OUTPUT_ONLY = RESOURCE_OUTPUT_ONLY | {"executionCount", "latestCreatedExecution", "etag"}
RESULT_PREFIX = "mlflow-gcp: migration result: "
CURRENT_RESULT = {
    "outcome": "current",
    "mlflow": "3.17.2",
    "tracking_before": "1b5f0d9ad7c1",
    "tracking_after": "1b5f0d9ad7c1",
    "auth_before": "0a3a4c6d8e21",
    "auth_after": "0a3a4c6d8e21",
    "error": None,
}
FAILED_TASK = "Task {execution}-task0 failed with message: The container exited with an error."
# A task Cloud Run could not start (the fake's wording: Google's reference gives none).
NOT_STARTED_TASK = "Task {execution}-task0 failed to start: {detail}"
SECRET_NOT_ACCESSIBLE = (
    "spec.template.spec.containers[0].env[0].value_from.secret_key_ref.name: Permission denied on secret: "
    "projects/demo-project/secrets/mlflow-env/versions/latest for service account "
    "run-mlflow@demo-project.iam.gserviceaccount.com."
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_outcome(job: dict, execution: dict) -> tuple[str, list[str]]:
    return "succeeded", [RESULT_PREFIX + json.dumps(CURRENT_RESULT)]


def log_uri(project: str, location: str, job: str, execution: str) -> str:
    query = (
        f'resource.type="cloud_run_job"\nresource.labels.job_name="{job}"\nresource.labels.location="{location}"\n'
        f'labels."run.googleapis.com/execution_name"="{execution}"'
    )
    return f"https://console.cloud.google.com/logs/viewer?project={project}&advancedFilter={quote(query, safe='')}"


class RunJobsControl:
    def __init__(self, jobs: dict[str, dict], executions: dict[str, dict]) -> None:
        self._jobs, self._executions = jobs, executions
        self.outcome: Callable[[dict, dict], tuple[str, list[str]]] = default_outcome
        self.missing_images: set[str] = set()  # images Google cannot pull: a job made with one fails
        self.start_failure: tuple[str, str] = ("SECRETS_ACCESS_CHECK_FAILED", SECRET_NOT_ACCESSIBLE)
        self.condition_reasons = True  # False: a container that never started is said only by its task
        self.cancel: Callable[[str], None] = lambda execution_id: None  # set by register
        self.finish: Callable[[str], None] = lambda execution_id: None  # set by register

    def job(self, name: str, project: str = "demo-project", location: str = "europe-west1") -> dict | None:
        found = self._jobs.get(f"projects/{project}/locations/{location}/jobs/{name}")
        return json.loads(json.dumps(found)) if found else None

    def executions(self, job: str) -> list[dict]:
        found = [e for e in self._executions.values() if e["job"] == job]
        return json.loads(json.dumps(sorted(found, key=lambda e: e["createTime"], reverse=True)))


def register(fake: FakeGoogle) -> None:
    jobs: dict[str, dict] = fake.state.setdefault("run_jobs", {})
    executions: dict[str, dict] = fake.state.setdefault("run_executions", {})
    tasks: dict[str, dict] = fake.state.setdefault("run_tasks", {})  # execution name -> its one task
    operations: dict[str, dict] = fake.state.setdefault("run_operations", {})  # served by run.py's operations.get
    control = RunJobsControl(jobs, executions)
    fake.run_jobs = control

    def parent(req: Request) -> str:
        return f"projects/{req.params['project']}/locations/{req.params['location']}"

    def existing_job(req: Request) -> dict:
        name = f"{parent(req)}/jobs/{req.params['job']}"
        if name not in jobs:
            raise not_found(f"Resource '{req.params['job']}' of kind 'JOB' in region '{req.params['location']}'")
        return jobs[name]

    def existing_execution(req: Request) -> dict:
        job = existing_job(req)
        name = f"{job['name']}/executions/{req.params['execution']}"
        if name not in executions:
            raise not_found(
                f"Resource '{req.params['execution']}' of kind 'EXECUTION' in region '{req.params['location']}'"
            )
        return executions[name]

    def operation(location_parent: str, type_url: str, resource: dict) -> dict:
        name = f"{location_parent}/operations/{uuid.uuid4()}"
        op = {"name": name, "done": False, "metadata": {"@type": type_url, **copy.deepcopy(resource)}}
        operations[name] = op
        return op

    def finish(op: dict, type_url: str, resource: dict, error: dict | None = None) -> None:
        op["metadata"] = {"@type": type_url, **copy.deepcopy(resource)}
        if error:
            op["error"] = error
        else:
            op["response"] = {"@type": type_url, **copy.deepcopy(resource)}
        op["done"] = True

    def ready(state: str = "CONDITION_SUCCEEDED") -> dict:
        return {"type": "Ready", "state": state, "lastTransitionTime": rfc3339(now())}

    def validate(body: dict) -> None:
        task = (body.get("template") or {}).get("template") or {}
        validate_containers(task.get("containers") or [], "template.template.containers")

    def job_operation(req: Request, job: dict, apply: Callable[[], str | None]) -> dict:
        job["reconciling"] = True
        job["terminalCondition"] = ready("CONDITION_RECONCILING")
        op = operation(parent(req), JOB_TYPE, job)

        def complete() -> None:
            error = apply()
            finish(op, JOB_TYPE, job, {"code": 9, "message": error} if error else None)

        fake.after("run.jobs", complete)
        fake.tick()
        return dict(op)

    def settle(job: dict) -> Callable[[], str | None]:
        """The job's change applied: Ready, or failed when its image cannot be found (CONTAINER_MISSING)."""

        def apply() -> str | None:
            job["reconciling"] = False
            job["observedGeneration"] = job["generation"]
            containers = job.get("template", {}).get("template", {}).get("containers", [])
            missing = [c["image"] for c in containers if c.get("image") in control.missing_images]
            if missing:
                message = f"Image '{missing[0]}' not found."
                failed = {**ready("CONDITION_FAILED"), "message": message, "reason": "CONTAINER_MISSING"}
                job["terminalCondition"] = failed
                return message
            job["terminalCondition"] = ready()
            return None

        return apply

    @fake.route("run", "POST", JOBS)
    def create_job(req: Request):
        job_id = req.query.get("jobId", "")
        if not job_id:
            raise ApiError(400, "jobId is required.")
        name = f"{parent(req)}/jobs/{job_id}"
        if name in jobs:
            raise already_exists(f"Resource '{job_id}'")
        from google.cloud import run_v2

        body = {k: v for k, v in parse_message(req.raw, run_v2.Job).items() if k not in OUTPUT_ONLY}
        validate(body)
        if req.query.get("validateOnly") == "true":
            return operation(parent(req), JOB_TYPE, {"name": name, **body}) | {"done": True}
        moment = rfc3339(now())
        job = {
            **body,
            "name": name,
            "uid": str(uuid.uuid4()),
            "generation": "1",
            "createTime": moment,
            "updateTime": moment,
            "creator": "user@example.com",
            "lastModifier": "user@example.com",
            "launchStage": body.get("launchStage", "GA"),
            "etag": f'"{uuid.uuid4().hex[:16]}"',
        }
        jobs[name] = job
        return job_operation(req, job, settle(job))

    @fake.route("run", "GET", JOB)
    def get_job(req: Request):
        return copy.deepcopy(existing_job(req))

    @fake.route("run", "GET", JOBS)
    def list_jobs(req: Request):
        prefix = f"{parent(req)}/jobs/"
        return {"jobs": [copy.deepcopy(j) for n, j in jobs.items() if n.startswith(prefix)]}

    @fake.route("run", "PATCH", JOB)
    def update_job(req: Request):
        name = f"{parent(req)}/jobs/{req.params['job']}"
        if name not in jobs:
            if req.query.get("allowMissing") == "true":
                req.query["jobId"] = req.params["job"]
                return create_job(req)
            existing_job(req)
        from google.cloud import run_v2

        job = jobs[name]
        body = parse_message(req.raw, run_v2.Job)
        if body.get("etag") and body["etag"] != job["etag"]:
            raise ApiError(409, "Etag mismatch: the job was changed concurrently.", status="ABORTED")
        body = {k: v for k, v in body.items() if k not in OUTPUT_ONLY and k != "name"}
        validate(body)
        if req.query.get("validateOnly") == "true":
            return operation(parent(req), JOB_TYPE, job) | {"done": True}
        for field in [k for k in job if k not in OUTPUT_ONLY and k not in ("name", "launchStage")]:
            job.pop(field)
        job.update(body)
        job["generation"] = str(int(job["generation"]) + 1)
        job["updateTime"] = rfc3339(now())
        job["etag"] = f'"{uuid.uuid4().hex[:16]}"'
        return job_operation(req, job, settle(job))

    @fake.route("run", "DELETE", JOB)
    def delete_job(req: Request):
        job = existing_job(req)

        def apply() -> None:
            jobs.pop(job["name"], None)
            for key in [k for k, e in executions.items() if e["job"] == job["name"].rsplit("/", 1)[-1]]:
                executions.pop(key)
                tasks.pop(key, None)

        return job_operation(req, job, apply)

    # -- executions ----------------------------------------------------------------------------------------
    def merged_template(job: dict, overrides: dict) -> dict:
        """The job's task template with `overrides` for this execution: env merged by name, args replaced."""
        template = copy.deepcopy(job["template"].get("template", {}))
        for override in overrides.get("containerOverrides", []):
            containers = template.get("containers", [])
            target = next((c for c in containers if c.get("name") == override.get("name")), None)
            target = target if target is not None else (containers[0] if containers else None)
            if target is None:
                continue
            if override.get("clearArgs"):
                target.pop("args", None)
            if override.get("args"):
                target["args"] = list(override["args"])
            env = {item["name"]: item for item in target.get("env", [])}
            env.update({item["name"]: item for item in override.get("env", [])})
            if env:
                target["env"] = list(env.values())
        if overrides.get("timeout"):
            template["timeout"] = overrides["timeout"]
        return template

    def condition(kind: str, state: str, message: str = "", reason: str = "", common: str = "") -> dict:
        out = {"type": kind, "state": state, "lastTransitionTime": rfc3339(now())}
        if message:
            out["message"] = message
        if reason:
            out["executionReason"] = reason
        if common:
            out["reason"] = common
        return out

    def write_logs(job: dict, execution: dict, lines: list[str], exit_code: int | None, start: datetime) -> None:
        """The container's lines and the exit, as Cloud Run writes them to Cloud Logging."""
        short = execution["name"].rsplit("/", 1)[-1]
        project, location = job["name"].split("/")[1], job["name"].split("/")[3]
        entries = []
        for i, text in enumerate([*lines, None]):
            if text is None and exit_code is None:
                break
            system = text is None
            entries.append(
                {
                    "logName": f"projects/{project}/logs/run.googleapis.com%2F"
                    + ("varlog%2Fsystem" if system else "stderr"),
                    "resource": {
                        "type": "cloud_run_job",
                        "labels": {"job_name": execution["job"], "location": location, "project_id": project},
                    },
                    "labels": {
                        "run.googleapis.com/execution_name": short,
                        "run.googleapis.com/task_index": "0",
                        "run.googleapis.com/task_attempt": "0",
                        "instanceId": uuid.uuid4().hex,
                    },
                    "timestamp": rfc3339(start + timedelta(microseconds=i + 1)),
                    "receiveTimestamp": rfc3339(now()),
                    "severity": ("ERROR" if exit_code else "INFO") if system else "DEFAULT",
                    "textPayload": f"Container called exit({exit_code})." if system else text,
                }
            )

        def ingest() -> None:
            for entry in entries:
                entry["insertId"] = f"{len(fake.log_entries) + 1:08x}"
                fake.log_entries.append(entry)

        fake.after("logging.ingest", ingest)

    def end(
        execution: dict, job: dict, op: dict, status: str, lines: list[str], start: datetime, exit_code: int = 0
    ) -> None:
        if execution.get("completionTime"):
            return  # cancelled meanwhile
        short = execution["name"].rsplit("/", 1)[-1]
        execution["reconciling"] = False
        execution["runningCount"] = 0
        execution["completionTime"] = rfc3339(now())
        error = None
        if status == "succeeded":
            execution["succeededCount"] = 1
            execution["conditions"][0] = condition(
                "Completed", "CONDITION_SUCCEEDED", "Execution completed successfully."
            )
            exit_code = 0
            write_logs(job, execution, lines, exit_code, start)
        elif status == "failed":
            execution["failedCount"] = 1
            message = FAILED_TASK.format(execution=short)
            execution["conditions"][0] = condition("Completed", "CONDITION_FAILED", message, "NON_ZERO_EXIT_CODE")
            error = {"code": 9, "message": message}
            exit_code = exit_code or 1
            write_logs(job, execution, lines, exit_code, start)
        elif status == "not_started":  # Cloud Run could not start the container: no line at all
            execution["failedCount"] = 1
            common, detail = control.start_failure
            message = NOT_STARTED_TASK.format(execution=short, detail=detail)
            attempt = {"code": 9, "message": message}
            common = common if control.condition_reasons else ""
            exit_code = None
            execution["conditions"][0] = condition("Completed", "CONDITION_FAILED", message, common=common)
            for i, c in enumerate(execution["conditions"]):
                if c["type"] == "Started":
                    execution["conditions"][i] = condition("Started", "CONDITION_FAILED", message, common=common)
            error = {"code": 9, "message": message}
        elif status == "cancelled":
            exit_code = None
            execution["cancelledCount"] = 1
            message = "The execution was cancelled."
            execution["conditions"][0] = condition("Completed", "CONDITION_FAILED", message, "CANCELLED")
            error = {"code": 1, "message": message}
            write_logs(job, execution, lines, None, start)
        else:
            raise ValueError(f"fake.run_jobs.outcome gave {status!r}")
        task = tasks[execution["name"]]
        task.update(
            reconciling=False,
            runningCount=0,
            completionTime=execution["completionTime"],
            conditions=[dict(execution["conditions"][0])],
        )
        if status == "not_started":
            task["lastAttemptResult"] = {"status": attempt}
        elif status != "cancelled":
            failed_status = {"code": 2, "message": FAILED_TASK.format(execution=short)}
            task["lastAttemptResult"] = {
                "status": {"code": 0} if exit_code == 0 else failed_status,
                "exitCode": exit_code,
            }
        latest = job.get("latestCreatedExecution", {})
        if latest.get("name") == execution["name"]:
            latest["completionTime"] = execution["completionTime"]
            latest["completionStatus"] = {
                "succeeded": "EXECUTION_SUCCEEDED",
                "failed": "EXECUTION_FAILED",
                "not_started": "EXECUTION_FAILED",
                "cancelled": "EXECUTION_CANCELLED",
            }[status]
        finish(op, EXECUTION_TYPE, execution, error)

    running: dict[str, tuple[dict, dict]] = {}  # execution name -> (job, operation)
    completions: dict[str, Callable[[], None]] = {}  # execution name -> how it ends

    def finish_by_id(execution_id: str) -> None:
        with fake.lock:
            completions[next(n for n in completions if n.endswith(f"/executions/{execution_id}"))]()

    control.finish = finish_by_id

    @fake.route("run", "POST", JOB + ":run")
    def run_job(req: Request):
        job = existing_job(req)
        from google.cloud import run_v2

        body = parse_message(req.raw, run_v2.RunJobRequest)
        if job.get("terminalCondition", {}).get("state") == "CONDITION_FAILED":
            raise ApiError(
                400,
                f"Job '{req.params['job']}' is not ready: {job['terminalCondition'].get('message', '')}",
                status="FAILED_PRECONDITION",
            )
        if body.get("etag") and body["etag"] != job["etag"]:
            raise ApiError(409, "Etag mismatch: the job was changed concurrently.", status="ABORTED")
        overrides = body.get("overrides", {})
        short_job = req.params["job"]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{job['name']}/executions/{short_job}-{suffix}"
        start = now()
        template = job.get("template", {})
        execution = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "creator": "user@example.com",
            "generation": "1",
            "labels": dict(template.get("labels", {})),
            "createTime": rfc3339(start),
            "startTime": rfc3339(start),
            "updateTime": rfc3339(start),
            "launchStage": job.get("launchStage", "GA"),
            "job": short_job,
            "parallelism": template.get("parallelism", 1),
            "taskCount": int(overrides.get("taskCount") or template.get("taskCount", 1)),
            "template": merged_template(job, overrides),
            "reconciling": True,
            "conditions": [
                condition("Completed", "CONDITION_PENDING"),
                condition("ResourcesAvailable", "CONDITION_SUCCEEDED"),
                condition("Started", "CONDITION_SUCCEEDED"),
            ],
            "observedGeneration": "1",
            "runningCount": 1,
            "logUri": log_uri(req.params["project"], req.params["location"], short_job, f"{short_job}-{suffix}"),
            "etag": f'"{uuid.uuid4().hex[:16]}"',
        }
        if body.get("validateOnly"):
            return operation(parent(req), EXECUTION_TYPE, execution) | {"done": True}
        executions[name] = execution
        tasks[name] = {
            "name": f"{name}/tasks/{short_job}-{suffix}-task0",
            "uid": str(uuid.uuid4()),
            "generation": "1",
            "labels": dict(execution["labels"]),
            "createTime": execution["createTime"],
            "startTime": execution["startTime"],
            "job": short_job,
            "execution": f"{short_job}-{suffix}",
            "index": 0,
            "retried": 0,
            "containers": copy.deepcopy(execution["template"].get("containers", [])),
            "maxRetries": execution["template"].get("maxRetries", 3),
            "timeout": execution["template"].get("timeout", "600s"),
            "reconciling": True,
            "conditions": [condition("Completed", "CONDITION_PENDING")],
            "logUri": execution["logUri"],
            "etag": f'"{uuid.uuid4().hex[:16]}"',
        }
        job["executionCount"] = int(job.get("executionCount", 0)) + 1
        job["latestCreatedExecution"] = {"name": name, "createTime": execution["createTime"]}
        op = operation(parent(req), EXECUTION_TYPE, execution)
        running[name] = (job, op)

        def complete() -> None:
            if execution.get("completionTime"):
                return
            status, lines, *code = control.outcome(copy.deepcopy(job), copy.deepcopy(execution))
            end(execution, job, op, status, list(lines), start, *code)

        completions[name] = complete
        fake.after("run.execution", complete)
        fake.tick()
        return dict(op)

    @fake.route("run", "GET", EXECUTION)
    def get_execution(req: Request):
        return copy.deepcopy(existing_execution(req))

    @fake.route("run", "GET", TASKS)
    def list_tasks(req: Request):
        task = tasks.get(existing_execution(req)["name"])
        return {"tasks": [copy.deepcopy(task)]} if task else {}

    @fake.route("run", "GET", TASK)
    def get_task(req: Request):
        task = tasks.get(existing_execution(req)["name"])
        if task is None or not task["name"].endswith(f"/tasks/{req.params['task']}"):
            raise not_found(f"Task '{req.params['task']}'")
        return copy.deepcopy(task)

    @fake.route("run", "GET", EXECUTIONS)
    def list_executions(req: Request):
        job = existing_job(req)
        found = control.executions(job["name"].rsplit("/", 1)[-1])
        return {"executions": found} if found else {}

    def cancel(execution: dict) -> None:
        job, op = running[execution["name"]]
        end(execution, job, op, "cancelled", [], datetime.fromisoformat(execution["startTime"].replace("Z", "+00:00")))

    def cancel_by_id(execution_id: str) -> None:
        with fake.lock:
            cancel(next(e for n, e in executions.items() if n.endswith(f"/executions/{execution_id}")))

    control.cancel = cancel_by_id

    @fake.route("run", "POST", EXECUTION + ":cancel")
    def cancel_execution(req: Request):
        execution = existing_execution(req)
        if execution.get("completionTime"):
            raise ApiError(
                400,
                f"Execution {execution['name'].rsplit('/', 1)[-1]} has already completed and cannot be cancelled.",
                status="FAILED_PRECONDITION",
            )
        if req.json.get("validateOnly"):
            return operation(parent(req), EXECUTION_TYPE, execution) | {"done": True}
        cancel(execution)
        op = operation(parent(req), EXECUTION_TYPE, execution)
        finish(op, EXECUTION_TYPE, execution)
        return dict(op)

    @fake.route("run", "DELETE", EXECUTION)
    def delete_execution(req: Request):
        execution = existing_execution(req)
        if not execution.get("completionTime"):
            cancel(execution)
        executions.pop(execution["name"], None)
        tasks.pop(execution["name"], None)
        op = operation(parent(req), EXECUTION_TYPE, execution)
        finish(op, EXECUTION_TYPE, execution)
        return dict(op)
