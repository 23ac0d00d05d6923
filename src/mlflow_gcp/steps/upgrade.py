"""The MLflow version the server runs, and its upgrade: the first resource of the deploy step, between the image
build and the serving revision (issue 24).

MLflow migrates its schemas irreversibly, and on MySQL not transactionally. So when the image `up` is about to
deploy runs another MLflow than the live service (the annotation `mlflow-gcp/mlflow-version` the deploy step
records), the plan says so as a change that interrupts the server, and the upgrade goes in stages, each read back
from Google so that a rerun after Ctrl-C or a lost answer carries on where the last one stopped:

1. maintenance: a revision of the NEW image with MLFLOW_GCP_MAINTENANCE=upgrade, which touches no database and
   answers 503, so no write lands after the backup (a roll-back would lose it); its template carries the upgrade's
   id, the version before and the previous image (annotations `mlflow-gcp/upgrade-*`);
2. an on-demand Cloud SQL backup whose description names the upgrade's id, checked SUCCESSFUL;
3. the migration, run apart from serving by the new image as the Cloud Run job `{service}-migrate`
   (resources/migration_job.py); an execution created before the backup ended is not this upgrade's;
4. the serving revision (the deploy step's service, with the version annotation), verified: health and a
   logged-in call.

A failed migration is rolled back: the backup restored onto the instance and the previous image serving again;
the run then ends with the job's last line. A schema newer than the new image knows (exit 3) is refused: nothing
was changed, the previous image serves again. An image OLDER than the live MLflow is refused before anything, and
so is an upgrade while the image the server runs (the roll-back's) is no longer in Artifact Registry
(`lost_way_back`); a rerun of an upgrade left in maintenance that meets it after a failed migration restores the
backup and says the server stays in maintenance, with the way to get it serving.
"""

from __future__ import annotations

from typing import Any

from mlflow_gcp.config import SECRET_MLFLOW
from mlflow_gcp.engine.base import Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, OperationFailedError
from mlflow_gcp.steps.mlflow_version import (
    DATABASE_MOVING,
    FIELD,
    INSTANCE_CREATED,
    KEEP_RUNNING_IMAGE,
    MAINTENANCE_ENV,
    MAINTENANCE_REASON,
    NEWER_SCHEMA,
    PREVIOUS_IMAGE,
    SERVING_OUTCOMES,
    UNKNOWN,
    UPGRADE_ANNOTATIONS,
    UPGRADE_FROM,
    UPGRADE_ID,
    VERSION_ANNOTATION,
    MlflowVersions,
    annotation,
    downgrade_error,
    image_version,
    in_maintenance,
    live_versions,
    lost_way_back,
    new_upgrade_id,
    newest_backup_named,
    running_image,
    without_service,
)
from mlflow_gcp.steps.schema_record import record
from mlflow_gcp.steps.service_json import merged, to_json_dict
from mlflow_gcp.steps.sql_instance import SCHEMA_OUTPUT

RESTORE_TIMEOUT = 60 * 60.0


class MigrationFailed(OperationFailedError):
    """The migration job failed and the upgrade was rolled back (or refused a newer schema)."""


class MlflowUpgrade(Resource):
    """The MLflow version the service runs; `update` is the upgrade. Absent (nothing to compare) on a first
    deploy, where the server makes a fresh schema, or when the image's version is not known."""

    kind = "MLflow version of"
    absent_is_desired = True
    deletable = False  # the service's annotation: it goes with the service

    def __init__(self, ctx: StepContext, service: Any) -> None:
        super().__init__(ctx, ctx.settings.service)
        self.service = service  # the deploy step's CloudRunService: reads, builds and rolls out the service
        self.image = image_version(ctx.settings)

    def login(self) -> tuple[str, str] | None:
        value = self.ctx.secret_values.get(SECRET_MLFLOW)
        if not value or ":" not in value:
            return None
        user, password = value.split(":", 1)
        return user, password

    def read(self) -> MlflowVersions | None:
        if self.image is None or self.ctx.outputs.get(KEEP_RUNNING_IMAGE):
            return None  # a rotation's rollout keeps the image the service runs: nothing to upgrade
        live = self.service.read()
        if live is not None and self.ctx.outputs.get(DATABASE_MOVING):
            return MlflowVersions(UNKNOWN, self.image, no_server=True)  # no server uses the restored data yet
        schema = self.ctx.outputs.get(SCHEMA_OUTPUT) or ""
        if live is None:
            instance = self.ctx.outputs.get("database.instance")
            if instance is None or INSTANCE_CREATED.format(instance) in self.ctx.created_now:
                return None  # a first deploy: the server makes fresh schemas in the empty databases
            # After `down`: the version recorded on the instance; the same as the image's deploys at once.
            return without_service(self.image, schema)
        self.live = live
        return live_versions(live, self.image, new_image_uri=self.service.image, login=self.login(), schema=schema)

    def drift(self, current: MlflowVersions) -> list[str]:
        return [FIELD] if current.pending else []

    def effect(self, field: str, current: MlflowVersions) -> Effect:
        if current.no_server:
            # Nothing runs to interrupt, and the server about to be made refuses a schema not at its head: the
            # plan says it, `up` does it without asking (after `down`, every `up` would ask otherwise); the backup
            # comes first and a failure restores it. `--mlflow-version` keeps the version the data was served with.
            return Effect(Impact.NONE, current.describe())
        return Effect(Impact.RESTART, current.describe())

    def problem(self, current: MlflowVersions | None) -> MlflowGcpError | None:
        if current is None:
            return None
        if not current.downgrade:
            # Before the maintenance revision: the image a failed migration would roll back to must still be there.
            return lost_way_back(self.ctx.clients, getattr(self, "live", None), current)
        settings = self.ctx.settings
        return downgrade_error(current, newest_backup_named(settings, self.ctx.clients), settings.db_instance)

    def details(self, current: MlflowVersions) -> dict[str, str]:
        return {"running": current.running, "image": current.image}

    def create(self) -> None:  # absent_is_desired: never asked
        raise NotImplementedError

    def update(self, current: MlflowVersions, fields: list[str]) -> None:
        Upgrade(self, current).run()

    # -- bodies of the service ------------------------------------------------------------------------------
    def serving_body(self, live: Any, *, image: str | None = None, version: str | None = None) -> dict[str, Any]:
        """The service as the deploy step wants it (no maintenance, no upgrade marks); `image`/`version`: the
        previous ones, for a roll-back."""
        body = merged(to_json_dict(live), self.service.desired(live))
        template = body["template"]
        annotations = template.setdefault("annotations", {})
        for key in UPGRADE_ANNOTATIONS:
            annotations.pop(key, None)
        if image is not None:
            template["containers"][0]["image"] = image
            for where in (annotations, body.setdefault("annotations", {})):
                if version and version != UNKNOWN:
                    where[VERSION_ANNOTATION] = version
                else:
                    where.pop(VERSION_ANNOTATION, None)
        return body

    def maintenance_body(self, live: Any, versions: MlflowVersions, upgrade_id: str) -> dict[str, Any]:
        body = self.serving_body(live)
        template = body["template"]
        template["containers"][0]["env"].append({"name": MAINTENANCE_ENV, "value": MAINTENANCE_REASON})
        template["annotations"].update(
            {
                UPGRADE_ID: upgrade_id,
                UPGRADE_FROM: versions.running,
                PREVIOUS_IMAGE: running_image(live),
                VERSION_ANNOTATION: versions.running,
            }
        )
        body.setdefault("annotations", {})[VERSION_ANNOTATION] = versions.running
        if versions.running == UNKNOWN:
            template["annotations"].pop(VERSION_ANNOTATION)
            body["annotations"].pop(VERSION_ANNOTATION)
        return body


def after_backup(run, backup) -> bool:
    """The execution was created after the backup ended: this upgrade's (an earlier one's is not)."""
    taken = backup.ended or backup.time
    return taken is not None and run.created is not None and run.created >= taken


class MigrationJobResource(Resource):
    """The Cloud Run job upgrades migrate with, made by the first upgrade (resources/migration_job.py): nothing
    to make or compare here; status lists it, and `down` deletes it with the service."""

    kind = "Cloud Run job"
    absent_is_desired = True

    def __init__(self, ctx: StepContext) -> None:
        from mlflow_gcp.resources.migration_job import MigrationJob

        self.job = MigrationJob(ctx.settings, ctx.clients)
        super().__init__(ctx, self.job.name)

    def read(self) -> Any | None:
        from google.api_core import exceptions as gexc

        client = self.ctx.clients.run_jobs()
        try:
            return self.ctx.call("run", lambda: client.get_job(name=self.job.path))
        except gexc.NotFound:
            return None

    def create(self) -> None:  # absent_is_desired: never asked
        raise NotImplementedError

    def details(self, current: Any) -> dict[str, str]:
        return {"executions": str(current.execution_count)}

    def delete(self, current: Any) -> None:
        self.job.delete()


class Upgrade:
    def __init__(self, resource: MlflowUpgrade, versions: MlflowVersions) -> None:
        self.resource = resource
        self.ctx = resource.ctx
        self.settings = resource.ctx.settings
        self.versions = versions
        self.upgrade_id = versions.upgrade_id

    def log(self, message: str) -> None:
        self.ctx.log(f"upgrade: {message}")

    def run(self) -> None:
        v = self.versions
        if v.no_server:
            self.without_server()
            return
        if not self.upgrade_id:
            # The record says `unknown` before the server stops serving (a Cloud SQL operation less in the
            # maintenance window): the migration job below may leave the schema anywhere between the versions.
            self.record("")
            self.maintenance()
        backup = self.backup()
        result = self.migrate(backup)
        outcome = (result.exit_result or {}).get("outcome")
        if result.state == "succeeded" and outcome in (*SERVING_OUTCOMES, None):
            self.record(v.image)
            self.serve()
            self.verify()
            self.log(
                f"MLflow {v.image} serves (schema {outcome or 'migrated'}); backup {backup.id} holds the data as "
                f"it was under MLflow {v.running}"
            )
            return
        line = self.job_line(result)
        newer = (
            "Deploy the MLflow that migrated it (`mlflow-gcp up --mlflow-version VERSION`, remembered), or "
            "restore a backup taken before that migration into a new instance (`mlflow-gcp backup list`, "
            "`mlflow-gcp restore BACKUP_ID`)."
        )
        if outcome == NEWER_SCHEMA:
            said = (
                f"The database's schema is newer than MLflow {v.image} knows ({line}): it was migrated by a newer "
                "MLflow. Nothing was changed"
            )
            self.roll_back_template(said, newer)
            raise MigrationFailed(f"{said}; the previous image (MLflow {v.running}) serves again.", newer)
        self.restore(backup)
        self.record(v.running)
        log = f"Read the job's log ({result.log_uri or 'Cloud Run > Jobs > ' + self.settings.service + '-migrate'})"
        said = (
            f"The migration of the database to MLflow {v.image} failed ({line}). Backup {backup.id}, taken just "
            f"before, was restored onto {self.settings.db_instance}: the data is as it was before the upgrade"
        )
        known = v.running != UNKNOWN
        self.roll_back_template(
            said,
            f"Run `mlflow-gcp up --mlflow-version {v.running if known else 'VERSION'}`: it builds the image of "
            + (f"MLflow {v.running}" if known else "the MLflow the data was served with")
            + f" again and the server serves the data with it (the version is remembered). {log} for why; once the "
            f"cause is fixed, `mlflow-gcp up --mlflow-version {v.image}` tries the upgrade again, with a new backup "
            "first.",
        )
        raise MigrationFailed(
            f"The migration of the database to MLflow {v.image} failed ({line}). It was rolled back: backup "
            f"{backup.id}, taken just before, was restored onto {self.settings.db_instance}, and the previous image "
            f"(MLflow {v.running}) serves the data again.",
            f"{log} for why. Meanwhile stay on your MLflow with `mlflow-gcp up --mlflow-version "
            f"{v.running}` (remembered); once the cause is fixed, `mlflow-gcp up --mlflow-version {v.image}` tries "
            "the upgrade again, with a new backup first.",
        )

    def without_server(self) -> None:
        """No service runs but the databases were there: backed up and migrated before the service is made. Each
        run takes its own backup (no revision holds the upgrade's id; nothing writes to the databases meanwhile)."""
        self.upgrade_id = new_upgrade_id()
        self.log(f"no server uses {self.settings.db_instance}, which holds databases: they are migrated first")
        backup = self.backup()
        result = self.migrate(backup)
        outcome = (result.exit_result or {}).get("outcome")
        if result.state == "succeeded" and outcome in (*SERVING_OUTCOMES, None):
            self.record(self.versions.image)
            self.log(f"the databases are at MLflow {self.versions.image} (schema {outcome or 'migrated'})")
            return
        line = self.job_line(result)
        if outcome != NEWER_SCHEMA:
            self.restore(backup)
            self.record(self.versions.running)
        raise MigrationFailed(
            f"The databases of {self.settings.db_instance} could not be brought to MLflow {self.versions.image} "
            f"({line}). " + ("Nothing was changed." if outcome == NEWER_SCHEMA else f"Backup {backup.id}, taken just "
            "before, was restored onto the instance.") + " No server uses it.",
            "Deploy the MLflow the databases were last used with: `mlflow-gcp up --mlflow-version VERSION` "
            "(remembered; `mlflow-gcp backup list` shows the backups with the versions of the upgrades).",
        )

    # -- 1. maintenance ------------------------------------------------------------------------------------
    def maintenance(self) -> None:
        resource, service = self.resource, self.resource.service
        live = service.read()
        self.upgrade_id = new_upgrade_id()
        body = resource.maintenance_body(live, self.versions, self.upgrade_id)
        upgrade_id = self.upgrade_id

        def applied():
            current = service.read()
            return current if current is not None and annotation(current, UPGRADE_ID) == upgrade_id else None

        self.log("the server goes into maintenance (503) with the new image while the database is backed up, migrated")
        service.roll_out(body, f"The maintenance revision of {service.label}", applied)
        self.log("maintenance revision serving")

    # -- 2. backup -----------------------------------------------------------------------------------------
    def backup(self):
        from mlflow_gcp.resources.sql_backups import DESCRIPTION_PREFIX, FINISHED, Backups

        v = self.versions
        why = f"before the upgrade of MLflow {v.running} to {v.image} (upgrade {self.upgrade_id})"
        backups = Backups(self.settings, self.ctx.clients)
        mine = [r for r in backups.list() if r.description.startswith(f"{DESCRIPTION_PREFIX}: {why}")]
        done = next((r for r in mine if r.successful), None)
        if done is not None:
            self.log(f"backup {done.id} (taken by an earlier run) is {done.status}")
            return done
        running = next((r for r in mine if r.status not in FINISHED), None)
        if running is not None:
            self.log(f"waiting for backup {running.id}, started by an earlier run")
            return backups.wait(running.id, self.log)
        return backups.take(why, self.log)

    # -- 3. the migration job ------------------------------------------------------------------------------
    def migrate(self, backup):
        from mlflow_gcp.resources.migration_job import MigrationJob

        job = MigrationJob(self.settings, self.ctx.clients)
        latest = job.latest()
        if latest is not None and latest.state != "running" and after_backup(latest, backup):
            self.log(f"migration {latest.short_name} (run by an earlier run) {latest.state}")
            return latest
        if latest is not None and latest.state == "running" and not after_backup(latest, backup):
            # Started before this upgrade's backup: it may write what the backup does not hold.
            raise MlflowGcpError(
                f"The migration {latest.short_name} of the job {job.name}, started before this upgrade's backup "
                f"{backup.id}, is still running. The server stays in maintenance.",
                f"Wait until it ends, or cancel it (`gcloud run jobs executions cancel {latest.short_name} --region "
                f"{self.settings.region} --project {self.settings.project}`), then run `mlflow-gcp up` again.",
            )
        live = self.resource.service.read()
        template = self.resource.serving_body(live) if live is not None else self.resource.service.desired(None)
        job.ensure(template["template"])
        self.record("")  # until the job has ended, the schema may be anywhere between the two versions
        # An execution still running (a run stopped while it waited) is waited for, not started again; one of this
        # upgrade's that ended since `latest` looked is taken as it is.
        execution = job.start(since=backup.ended or backup.time)
        self.log(f"migration {execution.rsplit('/', 1)[-1]} of the job {self.settings.service}-migrate runs")
        result = job.wait(execution, self.log)
        self.log(f"migration {result.short_name} {result.state}")
        return result

    def record(self, version: str) -> None:
        """The version the instance's schema is at, on the instance (steps/schema_record.py); "" or "unknown":
        not known."""
        version = "" if version == UNKNOWN else version
        record(self.ctx, version, f"the MLflow version its schema is at ({version or 'unknown'})")

    @staticmethod
    def job_line(result) -> str:
        found = result.exit_result or {}
        if found.get("error"):
            return f"{found.get('outcome', result.state)}: {found['error']}"
        if found:
            return f"outcome {found.get('outcome')}"
        said = f": {result.message}" if result.message else ""  # Google's word, e.g. the task failed to start
        return f"the job's execution {result.name.rsplit('/', 1)[-1]} {result.state}{said}"

    # -- 4. serving --------------------------------------------------------------------------------------
    def serve(self) -> None:
        service, image = self.resource.service, self.versions.image

        def applied():
            current = service.read()
            done = current is not None and not in_maintenance(current)
            return current if done and annotation(current, VERSION_ANNOTATION) == image else None

        live = service.read()
        service.roll_out(self.resource.serving_body(live), f"The serving revision of {service.label}", applied)
        self.log(f"serving revision of MLflow {image} ready")

    def verify(self) -> None:
        from mlflow_gcp.resources.server_check import check_health, checkable, wait_for_login

        live = self.resource.service.read()
        url = live.uri if live is not None else ""
        login = self.resource.login()
        if not url or login is None or not checkable(url):
            return
        health = check_health(url)
        check = wait_for_login(url, *login, log=self.log)
        if not (health.ok and check.ok):
            detail = health.detail or check.detail
            raise OperationFailedError(
                f"MLflow {self.versions.image} was deployed after its migration, but the server does not answer "
                f"as it should ({detail}).",
                "See the server's logs (`mlflow-gcp logs`). The data as it was before the upgrade is in the backup "
                "taken first (`mlflow-gcp backup list`); `mlflow-gcp restore BACKUP_ID` brings it back into a new "
                "instance.",
            )
        self.log("the server answers: health and a logged-in call")

    # -- roll-back -----------------------------------------------------------------------------------------
    def restore(self, backup) -> None:
        """The backup back onto the SAME instance. Acceptable here (unlike `restore`, which never overwrites):
        the server has been in maintenance since before the backup was taken, so no write happened after it and
        overwriting loses nothing; only the half-migrated schema goes. Restoring twice (a rerun) is harmless."""
        from mlflow_gcp.steps.sql_calls import SqlCalls

        s = self.settings
        body = {
            "restoreBackupContext": {
                "kind": "sql#restoreBackupContext",
                "backupRunId": backup.id,
                "instanceId": s.db_instance,
                "project": s.project,
            }
        }
        self.log(f"restoring backup {backup.id} onto {s.db_instance} (the migration failed)")
        SqlCalls(self.ctx).write(
            lambda api: api.instances().restoreBackup(project=s.project, instance=s.db_instance, body=body),
            f"Restoring backup {backup.id} onto {s.db_instance}",
            RESTORE_TIMEOUT,
        )
        self.log(f"backup {backup.id} restored onto {s.db_instance}")

    def roll_back_template(self, said: str, hint: str) -> None:
        """The previous image serving again. When it is no longer in Artifact Registry no revision of it could
        start (a fresh upgrade is refused before it starts: `lost_way_back`; a rerun of one left in maintenance
        meets it here): the server stays in maintenance, said with `said` (what happened to the data) and `hint`."""
        from mlflow_gcp.resources.registry_image import image_gone

        service, v = self.resource.service, self.versions
        live = service.read()
        previous = v.previous_image or (annotation(live, PREVIOUS_IMAGE) if live else "")
        if not previous:
            raise MlflowGcpError(
                f"The previous image of {service.label} is not known, so it cannot be deployed again.",
                "Deploy the previous mlflow-gcp's image with that version of mlflow-gcp (`mlflow-gcp up`).",
            )
        if image_gone(self.ctx.clients, previous):
            raise MigrationFailed(
                f"{said}. But the previous image, {previous} (MLflow {v.running}), is no longer in Artifact Registry "
                "(deleted by hand or by a cleanup policy?), so Cloud Run cannot start it again: the server stays in "
                "maintenance (503).",
                hint,
            )

        def applied():
            current = service.read()
            done = current is not None and not in_maintenance(current) and running_image(current) == previous
            return current if done else None

        body = self.resource.serving_body(live, image=previous, version=v.running)
        service.roll_out(body, f"The previous revision of {service.label}", applied)
        self.log(f"the previous image (MLflow {v.running}) serves again")

