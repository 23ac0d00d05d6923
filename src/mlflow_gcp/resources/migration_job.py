"""The schema migration as a Cloud Run job `{service}-migrate`: made from the service's template (same image,
environment, secrets, VPC egress and service account) with the container's args `["migrate"]`, one task, no retry.
Running it makes an execution; its result is the last `mlflow-gcp: migration result: {json}` line the container
writes, read back from Cloud Logging; a failed execution's task tells its exit code, or that it never started
(resources/migration_task.py).

Cloud Run Admin API v2 (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs and
.../projects.locations.jobs.executions) through google-cloud-run's JobsClient and ExecutionsClient over REST.
A `:run` is not idempotent (each makes an execution): after a lost answer the executions are listed again and a new
one is taken as ours, and a run still going (a command interrupted while it waited) is picked up, not doubled.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import operations, retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources.migration_task import (
    NEWER_SCHEMA_EXIT,
    NEWER_SCHEMA_OUTCOME,
    last_attempt,
    never_started,
)
from mlflow_gcp.service_spec import MANAGED_LABELS

JOB_SUFFIX = "-migrate"
MIGRATE_ARGS = ["migrate"]
TASK_TIMEOUT_SECONDS = 1800
RESULT_PREFIX = "mlflow-gcp: migration result: "
# Cloud Run writes "Container called exit(N)." to run.googleapis.com/varlog/system when the task's container ends
# (as public Cloud Run job logs show): once it is there, a result line that is not is not coming.
EXIT_MARK = "Container called exit("
# Log entries reach the Logging API a little after they are written ("it might take a few minutes for the log
# entries to appear", https://cloud.google.com/logging/docs/view/logs-explorer-interface); scaled by
# MLFLOW_GCP_WAIT_SCALE.
LOG_INGEST_SECONDS = 180.0
JOB_OPERATION_TIMEOUT = 300.0
# The container's own fields that a job's task does not take: it serves no port and has no probes.
SERVICE_ONLY_FIELDS = ("ports", "startupProbe", "livenessProbe")

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"


@dataclass(frozen=True)
class JobRun:
    name: str  # projects/P/locations/R/jobs/J/executions/E
    state: str  # "running" | "succeeded" | "failed" | "cancelled"
    exit_result: dict | None  # the parsed `migration result` line, when it could be read
    log_uri: str
    message: str = ""  # Google's word on how it ended (the Completed condition's message)
    created: datetime | None = None  # the execution's createTime (else startTime), UTC

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def job_name(settings: Settings) -> str:
    return f"{settings.service}{JOB_SUFFIX}"


def job_body(template: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The job (REST JSON, only the fields this tool owns) made from a service's revision template (REST JSON)."""
    containers = []
    for container in template.get("containers", [])[:1]:
        task_container = {k: copy.deepcopy(v) for k, v in container.items() if k not in SERVICE_ONLY_FIELDS}
        limits = (container.get("resources") or {}).get("limits")
        task_container.pop("resources", None)  # cpuIdle and startupCpuBoost are a service's
        if limits:
            task_container["resources"] = {"limits": dict(limits)}
        task_container["args"] = list(MIGRATE_ARGS)
        containers.append(task_container)
    task: dict[str, Any] = {"containers": containers, "maxRetries": 0, "timeout": f"{TASK_TIMEOUT_SECONDS}s"}
    # What the task shares with a revision: who it runs as, its way into the VPC, its volumes (a secret mounted as a
    # file), its sandbox and the key of its image.
    for field in ("serviceAccount", "vpcAccess", "volumes", "executionEnvironment", "encryptionKey"):
        if template.get(field):
            task[field] = copy.deepcopy(template[field])
    return {
        "labels": dict(labels),
        "template": {"labels": dict(labels), "taskCount": 1, "parallelism": 1, "template": task},
    }


def differences(owned: Any, want: Any, live: Any, path: str = "") -> list[str]:
    """The fields `owned` sets whose value differs between `want` and `live` (both with their defaults printed).
    Lists of containers are compared element by element on the keys owned; any other list is owned whole."""
    if isinstance(owned, dict):
        out: list[str] = []
        for key, sub in owned.items():
            w = want.get(key) if isinstance(want, dict) else None
            lv = live.get(key) if isinstance(live, dict) else None
            out += differences(sub, w, lv, f"{path}.{key}" if path else key)
        return out
    if path.endswith("containers") and isinstance(owned, list):
        live_list = live if isinstance(live, list) else []
        want_list = want if isinstance(want, list) else []
        if len(live_list) != len(owned) or len(want_list) != len(owned):
            return [path]
        return [d for i, sub in enumerate(owned) for d in differences(sub, want_list[i], live_list[i], f"{path}.{i}")]
    return [] if want == live else [path]


def state_of(execution: Any) -> str:
    """running, succeeded, failed or cancelled, from the execution's `Completed` condition (and its counts)."""
    from google.cloud import run_v2

    completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
    state = completed.state.name if completed is not None else ""
    cancelled = execution.cancelled_count > 0 or (
        completed is not None and completed.execution_reason == run_v2.Condition.ExecutionReason.CANCELLED
    )
    if state == "CONDITION_SUCCEEDED":
        return SUCCEEDED
    if state == "CONDITION_FAILED":
        return CANCELLED if cancelled else FAILED
    if "completion_time" in execution:  # ended, its condition not yet written: the counts tell
        if cancelled:
            return CANCELLED
        return SUCCEEDED if execution.succeeded_count >= max(1, execution.task_count) else FAILED
    return RUNNING


def created_at(execution: Any) -> datetime | None:
    for field in ("create_time", "start_time"):
        if field in execution:
            moment = getattr(execution, field)
            return datetime.fromtimestamp(moment.timestamp(), tz=timezone.utc)
    return None


def created_since(execution: Any, moment: datetime | None) -> bool:
    created = created_at(execution)
    return moment is not None and created is not None and created >= moment


def ended_lately(execution: Any) -> bool:
    """Ended within the time Logging may take to show its lines (or its end time unknown)."""
    if "completion_time" not in execution:
        return True
    return time.time() - execution.completion_time.timestamp() < LOG_INGEST_SECONDS


def completed_message(execution: Any) -> str:
    completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
    return completed.message if completed is not None else ""


class MigrationJob:
    def __init__(self, settings: Settings, clients: Clients) -> None:
        self.settings = settings
        self.clients = clients
        self.name = job_name(settings)
        self.parent = f"projects/{settings.project}/locations/{settings.region}"
        self.path = f"{self.parent}/jobs/{self.name}"

    # -- the job ---------------------------------------------------------------------------------------------
    def read(self) -> Any | None:
        """The job (run_v2.Job), or None."""
        from google.api_core import exceptions as gexc

        client = self.clients.run_jobs()
        try:
            return self._call(lambda: client.get_job(name=self.path), f"reading the Cloud Run job {self.name}")
        except gexc.NotFound:
            return None

    def ensure(self, template: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        """Create the job from the service's revision template (REST JSON), or replace it when a field it owns
        differs; an unchanged job is left alone."""
        body = job_body(template, labels if labels is not None else MANAGED_LABELS)
        current = self._settled()
        if current is None:
            if self._create(body):
                return
            current = self._settled()  # the name is taken: our own create whose answer was lost, or an older job
            if current is None:
                raise MlflowGcpError(
                    f"The Cloud Run job {self.name} was refused as existing, yet cannot be read.",
                    "Run the same command again in a minute.",
                )
        # A job whose last change failed (its image could not be pulled) is sent again even when unchanged: Google
        # checks it anew, and runs no job that is not ready.
        if self.drift(body, current) or current.terminal_condition.state.name == "CONDITION_FAILED":
            self._update(body)

    def delete(self) -> bool:
        """Delete the job and its executions (`down`); False when there was none. Sent again after a lost answer,
        the delete meets 404: the job is gone either way."""
        from google.api_core import exceptions as gexc

        if self.read() is None:
            return False
        client = self.clients.run_jobs()
        what = f"deleting the Cloud Run job {self.name}"
        try:
            operation = self._call(lambda: client.delete_job(name=self.path), what)
        except gexc.NotFound:
            return True  # our delete, its answer lost (or someone else's meanwhile)
        self._wait(operation, what)
        return True

    def drift(self, body: dict[str, Any], current: Any) -> list[str]:
        from google.cloud import run_v2

        def printed(job: Any) -> dict:
            return run_v2.Job.to_dict(job, use_integers_for_enums=False, preserving_proto_field_name=False)

        return differences(body, printed(run_v2.Job.from_json(json.dumps(body))), printed(current))

    def _settled(self) -> Any | None:
        """The job, once Google has finished applying a change to it (not `reconciling`)."""
        return operations.settled(
            self.read,
            busy=lambda job: job.reconciling,
            what=f"The Cloud Run job {self.name}",
            timeout=JOB_OPERATION_TIMEOUT,
        )

    def _create(self, body: dict[str, Any]) -> bool:
        """True when created here; False when the name was taken (a create whose answer was lost included)."""
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

        client = self.clients.run_jobs()
        job = run_v2.Job.from_json(json.dumps(body))
        what = f"creating the Cloud Run job {self.name}"
        try:
            operation = self._call(lambda: client.create_job(parent=self.parent, job=job, job_id=self.name), what)
        except gexc.GoogleAPICallError as e:
            if retry.is_already_exists(e):
                return False
            raise
        self._wait(operation, what)
        return True

    def _update(self, body: dict[str, Any]) -> None:
        from google.cloud import run_v2

        client = self.clients.run_jobs()
        job = run_v2.Job.from_json(json.dumps({**body, "name": self.path}))
        what = f"updating the Cloud Run job {self.name}"
        # A job is replaced whole (UpdateJobRequest has no mask): sent again after a lost answer, it is the same.
        self._wait(self._call(lambda: client.update_job(job=job), what), what)

    def _wait(self, operation: Any, what: str) -> None:
        from google.api_core import exceptions as gexc

        from mlflow_gcp.gcp.errors import translate

        try:
            operations.wait_gapic(operation, what=what[0].upper() + what[1:], timeout=JOB_OPERATION_TIMEOUT)
        except gexc.GoogleAPICallError as e:
            raise translate(e, what, self.settings.project) from e

    # -- executions ------------------------------------------------------------------------------------------
    def start(self, *, since: datetime | None = None) -> str:
        """Run the job and return the execution's name. An execution still running with the job's image (a run
        interrupted while it waited), or one created since `since` that has ended (the caller saw it running a
        moment ago), is returned instead of starting another; after a lost answer of `:run`, the execution it
        made is found and returned."""
        job = self.read()
        if job is None:
            raise MlflowGcpError(
                f"The Cloud Run job {self.name} does not exist, so the migration cannot run.",
                "Run `mlflow-gcp up` again: it creates the job before running it.",
            )
        before = self._executions()
        image = _image(job.template.template)
        running = [e for e in before if state_of(e) == RUNNING]
        for execution in running:
            if _image(execution.template) == image:
                return execution.name
        if running:
            other = running[0]
            raise MlflowGcpError(
                f"An execution of the migration job with another image ({_image(other.template)}) is still running: "
                f"{other.name.rsplit('/', 1)[-1]}.",
                "Wait for it to end (or cancel it: `gcloud run jobs executions cancel "
                f"{other.name.rsplit('/', 1)[-1]} --region {self.settings.region}`), then run the command again.",
            )
        ended = [e for e in before if _image(e.template) == image and created_since(e, since)]
        if ended:
            return ended[0].name
        known = {e.name for e in before}
        client = self.clients.run_jobs()

        def started_anyway() -> str | None:
            new = [e for e in self._executions() if e.name not in known]
            return new[0].name if new else None

        def run() -> str:
            metadata = client.run_job(name=self.path).metadata  # the Execution; looked up should it be missing
            name = metadata.name if metadata is not None else started_anyway()
            if not name:
                raise MlflowGcpError(f"Google started the Cloud Run job {self.name} but named no execution.")
            return name

        return self._call(run, f"running the Cloud Run job {self.name}", applied=started_anyway)

    def wait(self, execution: str, log: Callable[[str], None]) -> JobRun:
        """Wait for the execution to end; its result is read from Cloud Logging. Interrupted (Ctrl-C), the
        execution goes on: `start` or `latest` finds it again."""
        from google.api_core import exceptions as gexc

        client = self.clients.run_executions()
        short = execution.rsplit("/", 1)[-1]
        what = f"reading the execution {short} of the Cloud Run job {self.name}"

        def poll() -> Any:
            return self._call(lambda: client.get_execution(name=execution), what)

        try:
            first = poll()
            log(f"migration job execution {short} running; its logs: {first.log_uri}")
            final = operations.wait(
                poll,
                is_done=lambda e: state_of(e) != RUNNING,
                error_of=lambda e: None,
                what=f"The migration job execution {short}",
                timeout=TASK_TIMEOUT_SECONDS + JOB_OPERATION_TIMEOUT,
                first=first,
            )
        except gexc.NotFound as e:
            raise MlflowGcpError(
                f"The migration job execution {short} is gone (deleted while it ran?).",
                "Run the same command again: it runs the migration again.",
            ) from e
        return self._run(final, patient=True, log=log)

    def latest(self, log: Callable[[str], None] | None = None) -> JobRun | None:
        """The newest execution of the job (running or ended), or None when the job or any execution is missing.
        One that ended moments ago (a command interrupted while it read the result) has its result waited for."""
        newest = next(iter(self._executions()), None)
        return self._run(newest, patient=True, log=log) if newest is not None else None

    def _executions(self) -> list[Any]:
        """The job's executions, newest first; none when the job does not exist."""
        from google.api_core import exceptions as gexc

        client = self.clients.run_executions()
        what = f"listing the executions of the Cloud Run job {self.name}"
        try:
            found = self._call(lambda: list(client.list_executions(parent=self.path)), what)
        except gexc.NotFound:
            return []
        return sorted(found, key=lambda e: e.create_time.timestamp() if e.create_time else 0.0, reverse=True)

    def _run(self, execution: Any, *, patient: bool, log: Callable[[str], None] | None = None) -> JobRun:
        state = state_of(execution)
        result = None
        message = completed_message(execution)
        if state != RUNNING:
            # A failed execution's task says how its container ended: an exit code, or never started.
            call = functools.partial(self._call, what=f"reading the task of {execution.name.rsplit('/', 1)[-1]}")
            attempt = last_attempt(self.clients, execution.name, call) if state == FAILED else None
            not_started = never_started(execution) or (attempt is not None and not attempt.started)
            # A container that ran to its end lately wrote its result line: worth waiting for Logging to catch up.
            # One that never started wrote nothing: Logging is read once (no waiting out the bound) and Google's
            # message says why.
            patient = patient and state != CANCELLED and not not_started and ended_lately(execution)
            result = self._result(execution, patient=patient, log=log)
            if result is None and attempt is not None and attempt.exit_code == NEWER_SCHEMA_EXIT:
                # The line is not in Logging (not readable, not kept, or late), the exit code says it all the same.
                result = {"outcome": NEWER_SCHEMA_OUTCOME, "error": None, "told_by": "exit code 3"}
            if attempt is not None and not attempt.started and attempt.message and attempt.message not in message:
                message = f"{message}: {attempt.message}" if message else attempt.message
        return JobRun(execution.name, state, result, execution.log_uri, message, created_at(execution))

    # -- the result line, from Cloud Logging -------------------------------------------------------------------
    def log_filter(self, execution: Any) -> str:
        created = execution.create_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if execution.create_time else ""
        clauses = [
            'resource.type="cloud_run_job"',
            f'resource.labels.job_name="{self.name}"',
            f'resource.labels.location="{self.settings.region}"',
            f'labels."run.googleapis.com/execution_name"="{execution.name.rsplit("/", 1)[-1]}"',
        ]
        if created:
            clauses.append(f'timestamp>="{created}"')
        return " AND ".join(clauses)

    def _result(self, execution: Any, *, patient: bool, log: Callable[[str], None] | None) -> dict | None:
        """The execution's `migration result`, or None. Patient: until the line (or the container's exit line
        without it) has reached Logging, at most LOG_INGEST_SECONDS (scaled)."""
        from google.api_core import exceptions as gexc

        bound = retry.scaled(LOG_INGEST_SECONDS) if patient else 0.0
        start = time.monotonic()
        told = False
        while True:
            try:
                texts = self._log_texts(execution)
            except gexc.GoogleAPICallError as e:
                if log is not None:
                    log(f"the migration's result could not be read from Cloud Logging ({e.message})")
                return None
            for text in texts:  # newest first
                at = text.find(RESULT_PREFIX)
                if at >= 0:
                    try:
                        parsed = json.loads(text[at + len(RESULT_PREFIX) :])
                    except ValueError:
                        continue
                    if isinstance(parsed, dict):
                        return parsed
            exited = any(EXIT_MARK in text for text in texts)
            elapsed = time.monotonic() - start
            if exited or elapsed >= bound:
                return None
            if not told and log is not None:
                told = True
                log(retry.wait_message("the migration's log lines to reach Cloud Logging", LOG_INGEST_SECONDS))
            time.sleep(min(operations.poll_delay(elapsed), max(0.0, bound - elapsed)))

    def _log_texts(self, execution: Any) -> list[str]:
        """The execution's log lines (text), newest first (the result line is among the last: one page)."""
        from mlflow_gcp.gcp.errors import execute

        api = self.clients.logging()
        body = {
            "resourceNames": [f"projects/{self.settings.project}"],
            "filter": self.log_filter(execution),
            "orderBy": "timestamp desc",
            "pageSize": 100,
        }
        page = retry.call(lambda: execute(api.entries().list(body=body)))
        return [str(entry.get("textPayload", "")) for entry in page.get("entries", [])]

    # -- errors ----------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str, *, applied: Callable[[], Any] | None = None) -> Any:
        """Call with retries; a disabled API, a missing permission or any other refusal becomes the tool's error.
        NotFound and a taken name stay Google's, for the caller to read."""
        from google.api_core import exceptions as gexc

        from mlflow_gcp.gcp.errors import translate

        try:
            return retry.call(fn, applied=applied)
        except gexc.NotFound:
            raise
        except gexc.GoogleAPICallError as e:
            if retry.is_already_exists(e):
                raise
            raise translate(e, what, self.settings.project) from e


def _image(task_template: Any) -> str:
    return task_template.containers[0].image if task_template.containers else ""
