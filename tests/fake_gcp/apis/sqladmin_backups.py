"""Cloud SQL Admin v1: backup runs, restoring a backup into another instance, point-in-time clones, and the
operations list. Fields, operations and errors as in Google's reference (discovery document sqladmin v1,
revision 20261018, bundled with google-api-python-client; https://cloud.google.com/sql/docs/mysql/admin-api/rest):

- `backupRuns.insert` (POST .../instances/{instance}/backupRuns): an on-demand backup, an operation of type
  BACKUP_VOLUME whose `backupContext.backupId` names the run. The run (`sql#backupRun`) goes ENQUEUED -> RUNNING
  -> SUCCESSFUL, or FAILED with `error` (`fake.sql_fail_next("sqladmin.backup", message)`), after the latency
  `sqladmin.backup`: "an on-demand backup takes a while". The instance must be running; one operation at a time.
  `type` is ON_DEMAND (AUTOMATED for the daily ones, made here by `fake.sql_automated_backup(instance)`),
  `description` only for on-demand ones. `backupRuns.list` answers newest first ("in reverse chronological order
  of the backup initiation time"); `get` and `delete` (operation DELETE_VOLUME) by id; 404 for an unknown id.
- `instances.restoreBackup` (POST .../instances/{target}/restoreBackup): the path names the instance restored
  INTO, `restoreBackupContext.instanceId` the instance the backup was taken from (gcloud sql backups restore:
  --restore-instance / --backup-instance). Operation RESTORE_VOLUME (latency `sqladmin.restore`); the target's
  databases, users (with their passwords at backup time) and data become the backup's. The target must be running
  and may not run an older major version than the backup's.
- `instances.clone` (POST .../instances/{source}/clone) with `cloneContext.destinationInstanceName` and
  `pointInTime`: a new instance with the source's settings and its data as at that time (operation CLONE, latency
  `sqladmin.create`, the clone PENDING_CREATE meanwhile). Refused (400) when binary logging is off on the source,
  or when the time is outside the window the binary logs give; a destination that exists is 409
  instanceAlreadyExists, as for an insert.
- `projects.instances.getLatestRecoveryTime`: `earliestRecoveryTime` and `latestRecoveryTime` of that window. The
  window modelled: from the instance's creation, at most `transactionLogRetentionDays` (1 to 7, default 7) back,
  to now (https://cloud.google.com/sql/docs/mysql/backup-recovery/pitr: "transaction logs are retained for up to
  7 days"). Google's message for a time outside it is not documented; the fake's is its own.
- `operations.list?instance=`: the instance's operations, newest first.

Data: `fake.sql_data[instance]` is a free-form dict a test may set through `fake.sql_set_data(instance, value)`
(which also keeps its history, so a point-in-time clone gets the data as at that time). A backup takes the
databases, users and data at insert time.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools

from tests.fake_gcp.apis.sqladmin import instance_already_exists
from tests.fake_gcp.server import ApiError, FakeGoogle, Request

INSTANCE = "/v1/projects/{project}/instances/{instance}"
RUNS = INSTANCE + "/backupRuns"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ApiError(400, f"Invalid request: invalid timestamp {text!r}.", legacy_reason="invalid") from e


def register(fake: FakeGoogle) -> None:
    instances: dict[str, dict] = fake.state.setdefault("sql_instances", {})
    databases: dict[str, dict] = fake.state.setdefault("sql_databases", {})
    users: dict[str, list[dict]] = fake.state.setdefault("sql_users", {})
    runs: dict[str, list[dict]] = fake.state.setdefault("sql_backup_runs", {})
    data: dict[str, dict] = fake.state.setdefault("sql_data", {})
    history: dict[str, list[tuple[dt.datetime, dict]]] = fake.state.setdefault("sql_history", {})
    snapshots: dict[tuple[str, str], dict] = {}
    # Backup run ids are int64s unique per instance; Google's look like epoch milliseconds.
    ids = itertools.count(int(now().timestamp() * 1000))

    def instance_of(name: str) -> dict:
        instance = instances.get(name)
        if instance is None:
            raise ApiError(404, "The Cloud SQL instance does not exist.", legacy_reason="instanceDoesNotExist")
        return instance

    def not_running() -> ApiError:
        return ApiError(400, "Invalid request since instance is not running.", legacy_reason="invalid")

    def snapshot(name: str) -> dict:
        return copy.deepcopy(
            {"databases": databases.get(name, {}), "users": users.get(name, []), "data": data.get(name, {})}
        )

    def apply_snapshot(name: str, taken: dict) -> None:
        taken = copy.deepcopy(taken)
        databases[name], users[name], data[name] = taken["databases"], taken["users"], taken["data"]
        history.setdefault(name, []).append((now(), copy.deepcopy(taken)))

    def set_data(name: str, value: dict) -> None:
        """Test helper: the instance's data (what its MySQL databases hold), with its history."""
        data[name] = copy.deepcopy(value)
        history.setdefault(name, []).append((now(), snapshot(name)))

    def created(instance: dict) -> dt.datetime:
        return parse_time(instance.get("createTime") or rfc3339(now()))

    def window(instance: dict) -> tuple[dt.datetime, dt.datetime]:
        backups = instance["settings"].get("backupConfiguration", {})
        if not backups.get("binaryLogEnabled"):
            raise ApiError(
                400,
                "Invalid request: Point in time recovery requires binary logging to be enabled on the instance.",
                legacy_reason="invalid",
            )
        days = int(backups.get("transactionLogRetentionDays") or 7)
        latest = now()
        return max(created(instance), latest - dt.timedelta(days=days)), latest

    def public(run: dict) -> dict:
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def new_run(name: str, project: str, kind: str, description: str | None) -> dict:
        instance = instances[name]
        run_id = str(next(ids))
        stamp = rfc3339(now())
        run = {
            "kind": "sql#backupRun",
            "status": "ENQUEUED",
            "enqueuedTime": stamp,
            "id": run_id,
            "windowStartTime": stamp,
            "instance": name,
            "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{name}/backupRuns/{run_id}",
            "location": instance.get("region", "us-central1"),
            "type": kind,
            "backupKind": "SNAPSHOT",
            "databaseVersion": instance.get("databaseVersion"),
        }
        if description is not None and kind == "ON_DEMAND":
            run["description"] = description
        runs.setdefault(name, []).insert(0, run)
        snapshots[(name, run_id)] = snapshot(name)
        if fake.sql_on_backup is not None:  # an end-to-end test dumps its real database here
            fake.sql_on_backup(name, run_id)
        return run

    def find_run(name: str, run_id: str) -> dict:
        found = next((r for r in runs.get(name, []) if r["id"] == str(run_id)), None)
        if found is None:
            raise ApiError(404, "The backup run does not exist.", legacy_reason="backupRunDoesNotExist")
        return found

    def automated_backup(name: str, *, failed: str | None = None) -> dict:
        """Test helper: the daily automated backup of `name`, done (or FAILED with that message)."""
        run = new_run(name, instances[name]["project"], "AUTOMATED", None)
        run["startTime"] = run["endTime"] = run["enqueuedTime"]
        if failed:
            run["status"] = "FAILED"
            run["error"] = {"kind": "sql#operationError", "code": "INTERNAL_ERROR", "message": failed}
        else:
            run["status"] = "SUCCESSFUL"
        return public(run)

    # -- backup runs --------------------------------------------------------------------------------------
    @fake.route("sqladmin", "POST", RUNS)
    def insert_run(req: Request):
        name, project = req.params["instance"], req.params["project"]
        instance = instance_of(name)
        if instance["state"] != "RUNNABLE":
            raise not_running()
        if name in fake.sql_busy:
            raise ApiError(
                409,
                "Operation failed because another operation was already in progress. Try your request after the "
                "current operation is complete.",
                status="ABORTED",
                legacy_reason="operationInProgress",
            )
        run = new_run(name, project, "ON_DEMAND", req.json.get("description"))
        run["status"] = "RUNNING"
        run["startTime"] = rfc3339(now())

        def finish():
            run["status"] = "SUCCESSFUL"
            run["endTime"] = rfc3339(now())

        def failed():
            run["status"] = "FAILED"
            run["endTime"] = rfc3339(now())
            # The operation's error (set before this is called, maybe before insert_run has the operation back).
            ops = [o for o in fake.sql_operations.values() if o["targetId"] == name and o.get("error")]
            errors = ops[-1]["error"]["errors"] if ops else [{"code": "INTERNAL_ERROR", "message": "Backup failed."}]
            run["error"] = {"kind": "sql#operationError", **{k: errors[0].get(k) for k in ("code", "message")}}

        op = fake.sql_operation(project, name, "BACKUP_VOLUME", "sqladmin.backup", finish, on_error=failed)
        context = {"kind": "sql#backupContext", "backupId": run["id"]}
        fake.sql_operations[op["name"]]["backupContext"] = context
        return {**op, "backupContext": context}

    @fake.route("sqladmin", "GET", RUNS)
    def list_runs(req: Request):
        instance_of(req.params["instance"])
        items = [public(r) for r in runs.get(req.params["instance"], [])]
        return {"kind": "sql#backupRunsList", **({"items": items} if items else {})}

    @fake.route("sqladmin", "GET", RUNS + "/{id}")
    def get_run(req: Request):
        instance_of(req.params["instance"])
        return public(find_run(req.params["instance"], req.params["id"]))

    @fake.route("sqladmin", "DELETE", RUNS + "/{id}")
    def delete_run(req: Request):
        name = req.params["instance"]
        instance_of(name)
        run = find_run(name, req.params["id"])

        def finish():
            runs[name] = [r for r in runs.get(name, []) if r is not run]
            snapshots.pop((name, run["id"]), None)

        run["status"] = "DELETION_PENDING"
        return fake.sql_operation(req.params["project"], name, "DELETE_VOLUME", "sqladmin.backup", finish)

    # -- restore into another instance ----------------------------------------------------------------------
    @fake.route("sqladmin", "POST", INSTANCE + "/restoreBackup")
    def restore_backup(req: Request):
        target_name, project = req.params["instance"], req.params["project"]
        target = instance_of(target_name)
        context = req.json.get("restoreBackupContext") or {}
        run_id = str(context.get("backupRunId", ""))
        source_name = context.get("instanceId") or target_name
        if not run_id:
            raise ApiError(400, "Invalid request: backupRunId is required.", legacy_reason="invalid")
        if context.get("project", project) != project:
            raise ApiError(403, "The client is not authorized to make this request.", legacy_reason="notAuthorized")
        if source_name not in instances and not runs.get(source_name):
            raise ApiError(404, "The Cloud SQL instance does not exist.", legacy_reason="instanceDoesNotExist")
        run = find_run(source_name, run_id)
        if run["status"] != "SUCCESSFUL":
            raise ApiError(
                400, f"Invalid request: the backup run {run_id} is {run['status']}.", legacy_reason="invalid"
            )
        if target["state"] != "RUNNABLE":
            raise not_running()
        if _major(target["databaseVersion"]) < _major(run.get("databaseVersion") or ""):
            raise ApiError(
                400,
                "Invalid request: the backup cannot be restored to an instance of an older database version.",
                legacy_reason="invalid",
            )
        taken = snapshots[(source_name, run_id)]

        def finish():
            apply_snapshot(target_name, taken)
            if fake.sql_on_restore is not None:  # an end-to-end test loads its dump into a real database here
                fake.sql_on_restore(target_name, source_name, run_id)

        return fake.sql_operation(project, target_name, "RESTORE_VOLUME", "sqladmin.restore", finish)

    # -- point-in-time clone --------------------------------------------------------------------------------
    @fake.route("sqladmin", "POST", INSTANCE + "/clone")
    def clone(req: Request):
        source_name, project = req.params["instance"], req.params["project"]
        source = instance_of(source_name)
        context = req.json.get("cloneContext") or {}
        name = context.get("destinationInstanceName", "")
        if not name:
            raise ApiError(400, "Invalid request: destinationInstanceName is required.", legacy_reason="invalid")
        if name in instances or name in fake.sql_reserved:
            raise instance_already_exists()
        if source["state"] != "RUNNABLE":
            raise not_running()
        taken = snapshot(source_name)
        if context.get("pointInTime"):
            when = parse_time(context["pointInTime"])
            earliest, latest = window(source)
            if not earliest <= when <= latest:
                raise ApiError(
                    400,
                    f"Invalid request: the point in time {context['pointInTime']} is outside the recovery window of "
                    f"the instance ({rfc3339(earliest)} to {rfc3339(latest)}).",
                    legacy_reason="invalid",
                )
            before = [state for at, state in history.get(source_name, []) if at <= when]
            taken = copy.deepcopy(before[-1]) if before else {**taken, "data": {}}
        region = source.get("region", "us-central1")
        instance = copy.deepcopy(source)
        instance.update(
            {
                "name": name,
                "state": "PENDING_CREATE",
                "ipAddresses": [],
                "etag": "etag-1",
                "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{name}",
                "connectionName": f"{project}:{region}:{name}",
                "createTime": rfc3339(now()),
            }
        )
        instance["settings"]["settingsVersion"] = "1"
        instance["serverCaCert"] = {**source.get("serverCaCert", {}), "instance": name}
        instances[name] = instance
        network = instance["settings"].get("ipConfiguration", {}).get("privateNetwork", "")

        def finish():
            if network:
                start = fake.sql_connection_range(network.rsplit("/", 1)[-1]) or "10.1.0.0"
                instance["ipAddresses"].append(
                    {"type": "PRIVATE", "ipAddress": f"{start.rsplit('.', 1)[0]}.{fake.sql_next_ip()}"}
                )
            if instance["settings"].get("ipConfiguration", {}).get("ipv4Enabled", True):
                instance["ipAddresses"].append({"type": "PRIMARY", "ipAddress": f"34.77.0.{fake.sql_next_ip()}"})
            instance["state"] = "RUNNABLE"
            apply_snapshot(name, taken)

        return fake.sql_operation(
            project, name, "CLONE", "sqladmin.create", finish, on_error=lambda: instances.pop(name, None)
        )

    @fake.route("sqladmin", "GET", "/v1/projects/{project}/instances/{instance}/getLatestRecoveryTime")
    def latest_recovery_time(req: Request):
        instance = instance_of(req.params["instance"])
        earliest, latest = window(instance)
        return {
            "kind": "sql#getLatestRecoveryTime",
            "latestRecoveryTime": rfc3339(latest),
            "earliestRecoveryTime": rfc3339(earliest),
        }

    # -- operations list ------------------------------------------------------------------------------------
    @fake.route("sqladmin", "GET", "/v1/projects/{project}/operations")
    def list_operations(req: Request):
        name = req.query.get("instance", "")
        found = [dict(op) for op in fake.sql_operations.values() if not name or op["targetId"] == name]
        found.reverse()  # newest first
        return {"kind": "sql#operationsList", **({"items": found} if found else {})}

    fake.sql_backup_runs = runs
    fake.sql_on_backup = None  # (instance, backup id) -> None
    fake.sql_on_restore = None  # (target instance, source instance, backup id) -> None
    fake.sql_data = data
    fake.sql_set_data = set_data
    fake.sql_automated_backup = automated_backup


def _major(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("_")[1:3] if part.isdigit())
