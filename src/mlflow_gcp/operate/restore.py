"""`restore BACKUP_ID` / `restore --to-time TIME`: the databases as they were, in a NEW Cloud SQL instance, and the
server moved onto it. Cloud SQL's in-place restore overwrites the instance it restores into; this never does:
the instance the server uses is only read.

Stages, each safe to interrupt and resumed by running the same command again (the new instance's name follows
from the restore point, so a rerun finds it):
1. the new instance `INSTANCE-restore-b<ID>` (or `-t<TIME>`): by id, made by the database step exactly as `up`
   makes one (private IP, backups and binary log, deletion protection, encryption mode, the databases and the
   user); by time, a point-in-time clone of the current instance (`instances.clone` with `pointInTime`), then
   brought in line by the same step;
2. by id: the backup restored into it (`instances.restoreBackup`, the path naming the new instance and
   `restoreBackupContext.instanceId` the one the backup was taken from); then the new instance is labelled with
   what it holds (`mlflow-gcp-restore-point`, `mlflow-gcp-restored-from`): a rerun does not restore again;
3. the MySQL user gets the password of the `mysql-credentials` version the server uses (a backup holds the
   passwords of its time);
4. every step of `up` with `db_instance` set to the new instance: a new `mlflow-env` version, a new revision, and
   the settings recorded with the deployment now name the new instance, so later `up`, `status` and `down` treat
   it as the instance;
5. a logged-in call to the server. A failure in 4 or 5 runs the steps again with the previous instance, so the
   server is back where it was; the new instance is kept and named.
The previous instance is never changed: it keeps the data written after the restore point until the user deletes
it (the result says how, and what it costs per month meanwhile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from google.api_core import exceptions as gexc

from mlflow_gcp.config import SECRET_MYSQL, Settings
from mlflow_gcp.engine.base import Change, Event, Mode, Status, StepContext
from mlflow_gcp.errors import OperationFailedError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.gcp.errors import execute, translate
from mlflow_gcp.labels import SCHEMA_LABEL, SCHEMA_NOT_KNOWN
from mlflow_gcp.operate import login as login_mod
from mlflow_gcp.operate.restore_plan import (
    RESTORE_POINT_LABEL,
    RESTORED_FROM_LABEL,
    Plan,
    RestoreError,
    RestorePoint,
    RestoreResult,
    new_instance_name,
    private_ip,
)
from mlflow_gcp.operate.restore_versions import refuse_an_upgrade
from mlflow_gcp.resources import live_service
from mlflow_gcp.resources.secret import split_credentials
from mlflow_gcp.resources.sql_backups import Backups, iso

Log = Callable[[str], None]

# The live view's lines of the stages that are not steps of `up`.
STAGES = ("new-instance", "restore-data", "passwords", "verify")


class Restore:
    def __init__(
        self,
        settings: Settings,
        point: RestorePoint,
        *,
        clients: Clients | None = None,
        log: Log = print,
        on_event: Callable[[Event], None] | None = None,
        approve: Callable[[Change], None] = lambda change: None,
    ) -> None:
        self.settings = settings
        self.point = point
        self.clients = clients or Clients(settings.project)
        self.log = log
        self.on_event = on_event or (lambda event: None)
        self.approve = approve
        self.plan: Plan | None = None
        self.way_back: tuple[object, str] | None = None  # (the service before the move, its MLflow): an older image
        self.server_env = ""  # the mlflow-env content the server used before the move

    # -- helpers -------------------------------------------------------------------------------------------
    @property
    def api(self):
        return self.clients.sqladmin()

    def _stage(self, name: str, status: Status, message: str = "") -> None:
        self.on_event(Event(name, "status", message, status))

    def _say(self, stage: str, message: str) -> None:
        self.on_event(Event(stage, "log", message))

    def _instance(self, name: str) -> dict | None:
        try:
            return retry.call(lambda: execute(self.api.instances().get(project=self.settings.project, instance=name)))
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as e:
            raise translate(e, f"reading the Cloud SQL instance {name}", self.settings.project) from e

    def _sql(self, settings: Settings | None = None):
        from mlflow_gcp.steps.sql_calls import SqlCalls

        return SqlCalls(StepContext(settings=settings or self.settings, clients=self.clients))

    def _server_host(self, service) -> str:
        """DB_HOST of the mlflow-env version the live service pins: the database the server uses."""
        self.server_env = login_mod.pinned_env(self.clients, self.settings.project, service)
        return login_mod.db_host(self.server_env)  # server_env: what a failed way back makes the latest again

    # -- 0. what is there ----------------------------------------------------------------------------------
    def prepare(self) -> Plan:
        s = self.settings
        current = self._instance(s.db_instance)
        if current is None:
            raise RestoreError(
                f"The Cloud SQL instance {s.db_instance} does not exist in {s.project}: there is nothing to restore "
                "from.",
                "Check --project and --db-instance (`mlflow-gcp status` shows the deployment).",
            )
        labels = current.get("settings", {}).get("userLabels", {}) or {}
        service = live_service.read_service(s, self.clients)
        if service is None:
            raise RestoreError(
                f"The Cloud Run service {s.service} does not exist: there is no server to move onto a restored "
                "database.",
                "Run `mlflow-gcp up` first.",
            )
        self.way_back = refuse_an_upgrade(self.settings, self.clients, self.point, service)
        server_host = self._server_host(service)
        if labels.get(RESTORE_POINT_LABEL) == self.point.tag:
            # A rerun after the move was recorded: the deployment's instance is the restored one.
            previous = labels.get(RESTORED_FROM_LABEL, "")
            self.plan = Plan(previous, s.db_instance, self._instance(previous) or {}, current, server_host, True, True)
            return self.plan
        if current.get("state") != "RUNNABLE":
            raise RestoreError(
                f"The Cloud SQL instance {s.db_instance} is {current.get('state')}: Cloud SQL restores and clones only "
                "from a running instance.",
                "Start it (`mlflow-gcp status` says how) and run again.",
            )
        new = new_instance_name(s.db_instance, self.point)
        target = self._instance(new)
        if target is not None and private_ip(target) and private_ip(target) == server_host:
            # Interrupted after the server moved and before the settings were recorded: only the record is left.
            restored = (target.get("settings", {}).get("userLabels") or {}).get(RESTORE_POINT_LABEL) == self.point.tag
            if not restored:
                raise RestoreError(
                    f"The server already uses the Cloud SQL instance {new}, but it is not labelled as holding "
                    f"{self.point.describe()}: nothing is restored into an instance the server uses.",
                    "Run `mlflow-gcp up` to put the deployment back on the recorded instance, then run the restore "
                    "again.",
                )
        restored = target is not None and (
            (target.get("settings", {}).get("userLabels") or {}).get(RESTORE_POINT_LABEL) == self.point.tag
        )
        plan = Plan(s.db_instance, new, current, target, server_host, restored, False)
        if not restored and self.point.backup_id:
            backup = Backups(s, self.clients).get(self.point.backup_id)
            if backup is None:
                raise RestoreError(
                    f"The Cloud SQL instance {s.db_instance} has no backup {self.point.backup_id}.",
                    "`mlflow-gcp backup list` shows its backups and their ids.",
                )
            if not backup.successful:
                raise RestoreError(
                    f"The backup {self.point.backup_id} of {s.db_instance} is {backup.status}: only a successful "
                    "backup can be restored.",
                    "Choose another one in `mlflow-gcp backup list`, or restore to a time with --to-time.",
                )
        if target is None and self.point.time is not None:
            plan.window = Backups(s, self.clients).window()
            if not plan.window.contains(self.point.time):
                raise RestoreError(
                    f"{iso(self.point.time)} is outside the point-in-time window of {s.db_instance} "
                    f"({plan.window.describe()}); nothing was changed.",
                    "Choose a time inside the window (`mlflow-gcp backup list` shows it), or restore a backup by id.",
                )
        self.plan = plan
        return plan

    # -- 1. the new instance -------------------------------------------------------------------------------
    def new_settings(self) -> Settings:
        assert self.plan is not None
        return dataclasses.replace(self.settings, db_instance=self.plan.new)

    def previous_settings(self) -> Settings:
        assert self.plan is not None
        return dataclasses.replace(self.settings, db_instance=self.plan.previous)

    def _context(self, settings: Settings, mode: Mode = Mode.APPLY) -> StepContext:
        return StepContext(
            settings=settings, clients=self.clients, mode=mode, on_event=self.on_event, approve=self.approve
        )

    def make_instance(self) -> None:
        from mlflow_gcp.engine.loop import run_step
        from mlflow_gcp.steps import BY_NAME, load_prerequisites
        from mlflow_gcp.steps.sql_calls import CREATE_TIMEOUT

        plan = self.plan
        assert plan is not None
        self._stage("new-instance", Status.RUNNING)
        if self.point.time is not None and plan.target is None:
            self._clone(CREATE_TIMEOUT)
        ctx = self._context(self.new_settings())
        load_prerequisites(("database",), ctx)
        run_step(BY_NAME["database"], ctx)  # by id: makes it; by time: brings the clone in line with the settings
        plan.target = self._instance(plan.new)
        if plan.target is None or plan.target.get("state") != "RUNNABLE":
            raise OperationFailedError(f"The Cloud SQL instance {plan.new} is not running after it was made")
        self._stage("new-instance", Status.CREATED)
        self.log(f"the Cloud SQL instance {plan.new} is ready")

    def _clone(self, timeout: float) -> None:
        """The point-in-time clone, waited for until it runs. A clone an interrupted run started is waited for; one
        that failed on Google's side (the instance is gone again) is sent again: the database step must never find
        the name free and make an empty instance in its place."""
        from mlflow_gcp.gcp.operations import wait

        plan = self.plan
        assert plan is not None and self.point.time is not None
        body = {
            "cloneContext": {
                "kind": "sql#cloneContext",
                "destinationInstanceName": plan.new,
                "pointInTime": iso(self.point.time),
            }
        }
        sql = self._sql()
        for _ in range(3):
            target = self._instance(plan.new)
            if target is None:
                self._say(
                    "new-instance", f"cloning {plan.previous} as it was at {iso(self.point.time)} into {plan.new}"
                )
                try:
                    operation = retry.call(
                        lambda: execute(
                            self.api.instances().clone(project=self.settings.project, instance=plan.previous, body=body)
                        ),
                        predicate=sql.write_predicate,
                    )
                    sql.wait(operation, f"Cloning {plan.previous} into {plan.new}", timeout)
                except gexc.GoogleAPICallError as e:
                    if not retry.is_already_exists(e):
                        raise translate(e, f"cloning {plan.previous}", self.settings.project) from e
                    # a clone whose answer was lost: waited for below
            target = wait(
                lambda: self._instance(plan.new),
                is_done=lambda i: i is None or i.get("state") != "PENDING_CREATE",
                error_of=lambda i: None,
                what=f"Cloning {plan.previous} into {plan.new}",
                timeout=timeout,
            )
            if target is not None and target.get("state") == "RUNNABLE":
                return
            if target is not None:
                raise RestoreError(
                    f"The clone {plan.new} of {plan.previous} is {target.get('state')}; nothing else was changed.",
                    f"See its operations (`gcloud sql operations list --instance {plan.new}`).",
                )
        raise RestoreError(f"Cloning {plan.previous} into {plan.new} failed three times; nothing else was changed.")

    # -- 2. the data ---------------------------------------------------------------------------------------
    def restore_data(self) -> None:
        from mlflow_gcp.steps.sql_calls import UPDATE_TIMEOUT

        plan = self.plan
        assert plan is not None and plan.target is not None
        self._stage("restore-data", Status.RUNNING)
        if plan.restored:
            self._stage("restore-data", Status.UNCHANGED)
            return
        if plan.new == self.settings.db_instance or (private_ip(plan.target) == plan.server_host):
            raise RestoreError(f"Refusing to restore into {plan.new}: the server uses it.")
        if self.point.backup_id:
            self._restore_backup(UPDATE_TIMEOUT)
            self.log(f"backup {self.point.backup_id} of {plan.previous} restored into {plan.new}")
        live = plan.target.get("settings", {}).get("userLabels", {}) or {}
        labels = {**live, RESTORE_POINT_LABEL: self.point.tag, RESTORED_FROM_LABEL: plan.previous[:63]}
        # The MLflow of the restored data is not known (a clone carries the label of the instance as it is NOW):
        # the move's migration records it (steps/schema_record.py).
        labels[SCHEMA_LABEL] = SCHEMA_NOT_KNOWN
        self._sql().write(
            lambda api: api.instances().patch(
                project=self.settings.project, instance=plan.new, body={"settings": {"userLabels": labels}}
            ),
            f"Labelling {plan.new} with what it holds",
            UPDATE_TIMEOUT,
        )
        plan.restored = True
        self._stage("restore-data", Status.UPDATED)
        self.log(f"{plan.new} holds {self.point.describe()} of {plan.previous}")

    def _restore_backup(self, timeout: float) -> None:
        plan = self.plan
        assert plan is not None
        project = self.settings.project
        body = {
            "restoreBackupContext": {
                "kind": "sql#restoreBackupContext",
                "backupRunId": self.point.backup_id,
                "instanceId": plan.previous,  # the instance the backup was taken from; the path names the target
                "project": project,
            }
        }
        sql = self._sql()

        def started() -> dict | None:
            """A restore of this run into the new instance whose answer was lost: waited for, not sent again."""
            ops = execute(self.api.operations().list(project=project, instance=plan.new, maxResults=20))
            return next(
                (o for o in ops.get("items", []) if o.get("operationType") == "RESTORE_VOLUME" and not o.get("error")),
                None,
            )

        self._say("restore-data", f"restoring backup {self.point.backup_id} of {plan.previous} into {plan.new}")

        try:
            operation = retry.call(
                lambda: execute(self.api.instances().restoreBackup(project=project, instance=plan.new, body=body)),
                predicate=sql.write_predicate,
                deadline=retry.SQL_IN_PROGRESS_DEADLINE,
                applied=started,
            )
        except gexc.GoogleAPICallError as e:
            raise translate(e, f"restoring backup {self.point.backup_id} into {plan.new}", project) from e
        sql.wait(operation, f"Restoring backup {self.point.backup_id} into {plan.new}", timeout)

    # -- 3. the passwords ----------------------------------------------------------------------------------
    def align_password(self, service=None) -> None:
        """The MySQL user of the new instance gets the password the server uses (the pinned version)."""
        from mlflow_gcp.steps.sql_calls import SMALL_TIMEOUT

        plan = self.plan
        assert plan is not None
        self._stage("passwords", Status.RUNNING)
        s = self.settings
        service = service or live_service.read_service(s, self.clients)
        version = live_service.pinned_versions(service).get(SECRET_MYSQL, live_service.LATEST)
        value, number = login_mod.access(self.clients, s.project, SECRET_MYSQL, version)
        login, password = split_credentials(SECRET_MYSQL, value)
        body = {"name": login, "host": "%", "password": password}
        self._sql().write(
            lambda api: api.users().update(project=s.project, instance=plan.new, name=login, host="%", body=body),
            f"Setting the password of the MySQL user {login} on {plan.new}",
            SMALL_TIMEOUT,
        )
        self._stage("passwords", Status.UPDATED)
        self.log(f"the MySQL user {login} of {plan.new} has the password of version {number} of {SECRET_MYSQL}")

    # -- 4. the move ---------------------------------------------------------------------------------------
    def run_up(self, settings: Settings, *, moving: bool = False) -> None:
        """`up`'s steps with `settings`; `moving`: onto the restored instance, whose data (the backup's) the deploy
        step migrates to the image's MLflow first, as after an upgrade since the backup (steps/upgrade.py)."""
        from mlflow_gcp.orchestrator import run_concurrently
        from mlflow_gcp.steps import STEPS
        from mlflow_gcp.steps.mlflow_version import DATABASE_MOVING

        ctx = self._context(settings)
        if moving:
            ctx.outputs.set(DATABASE_MOVING, settings.db_instance)
        report = run_concurrently(list(STEPS), ctx)
        if not report.ok:
            error = report.first_error()
            raise OperationFailedError(
                f"The steps with the instance {settings.db_instance} failed: "
                + (getattr(error, "message", None) or str(error) if error else "a step was skipped")
            )

    def move(self) -> None:
        plan = self.plan
        assert plan is not None
        self.run_up(self.new_settings(), moving=True)
        plan.moved = True
        self.log(f"the server runs on {plan.new}, recorded as the deployment's instance")

    # -- 5. the check --------------------------------------------------------------------------------------
    def verify(self, settings: Settings | None = None) -> str:
        from mlflow_gcp.resources.server_check import check_health, wait_for_login

        self._stage("verify", Status.RUNNING)
        login = login_mod.current_login(settings or self.settings, self.clients)
        check = wait_for_login(login.url, login.username, login.password, log=lambda m: self._say("verify", m))
        if check.unreachable:
            raise RestoreError(
                f"{login.url} cannot be reached from here ({check.detail}), so the server could not be checked"
            )
        if not check.ok:
            raise RestoreError(f"The server at {login.url} refused a logged-in call: {check.detail or check.status}")
        health = check_health(login.url)
        if not health.ok:
            raise RestoreError(f"{login.url}/health {health.detail}")
        self._stage("verify", Status.UNCHANGED)
        self.log(f"a logged-in call works against {login.url}")
        return login.url

    # -- recovery ------------------------------------------------------------------------------------------
    def roll_back(self, error: BaseException) -> RestoreError:
        from mlflow_gcp.operate.restore_put_back import roll_back

        return roll_back(self, error)

    # -- the whole thing -----------------------------------------------------------------------------------
    def run(self) -> RestoreResult:
        plan = self.plan or self.prepare()
        if not plan.moved:
            self.make_instance()
            self.restore_data()
            self.align_password()
            try:
                self.move()
                url = self.verify()
            except Exception as error:
                raise self.roll_back(error) from error
        else:
            for stage in ("new-instance", "restore-data", "passwords"):
                self._stage(stage, Status.UNCHANGED)
            self.run_up(self.settings)
            url = self.verify()
        previous = plan.previous_state.get("settings", {})
        return RestoreResult(
            self.point,
            plan.new,
            plan.previous,
            url,
            already_done=plan.moved and plan.new == self.settings.db_instance,
            previous_edition=previous.get("edition", "ENTERPRISE") if previous else "",
            previous_tier=previous.get("tier", ""),
        )
