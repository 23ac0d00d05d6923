"""`credentials rotate`: new passwords, applied, rolled out, verified, and only then the old versions disabled.

The version a service uses is the one its user has, recorded on the secret (resources/credential_record):
`up` deploys that one, never `latest`. Stages, each safe to interrupt:
1. add a new version to each rotated secret (or take up the one an interrupted rotation added): until it
   is recorded as applied, `up` ignores it and says how to finish or undo the rotation;
2. mark it "rotating" on the secret, then `--database`: set the Cloud SQL user's password (sqladmin
   users.update). From the mark on, the MySQL user may have either password: `up` puts the recorded one back
   for sure, a new `rotate` finishes;
3. roll out a revision: the deploy step, run with fresh outputs, pins the new versions (for MLflow the
   container brings the admin password in line with the secret at startup). It keeps the image the service runs:
   a rotation never upgrades MLflow nor rolls out this mlflow-gcp's image (an upgrade pending is said, and left
   to `up`; one that stopped in maintenance is refused before anything changes);
4. check the new login against the live service (an unreachable server fails at once, with the reason);
5. record the new versions as applied, then disable the versions the service no longer uses.
A failure in 1 to 4 puts the old database password back and the service back on the old versions, checks the
old login, and destroys the new versions (never used), so `latest` is the applied one again.

Ctrl-C (SIGINT) or SIGTERM during 1 to 4 is such a failure: the stage in progress is undone (an operation already
sent, e.g. the Cloud SQL password change, completes first and is then reverted); during 5 the rotation finishes.
Either way the undoing or finishing is shielded from a second Ctrl-C, and the message says which happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL, Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.operate import login as login_mod
from mlflow_gcp.operate.rotation_lease import Lease
from mlflow_gcp.operate.rotation_rollback import RollBack
from mlflow_gcp.operate.rotation_stops import Log, RotationError, Shield, reason
from mlflow_gcp.operate.rotation_versions import kept_image_line, refuse_a_missing_image, refuse_an_unfinished_upgrade
from mlflow_gcp.resources import credential_record as record
from mlflow_gcp.resources import live_service
from mlflow_gcp.resources.secret import add_version_once, new_password, set_version_state, split_credentials
from mlflow_gcp.resources.server_check import Check, check_health, wait_for_login


@dataclass
class SecretRotation:
    secret_id: str
    login: str
    old_version: str
    old_value: str = field(repr=False)
    new_version: str = ""
    new_value: str = field(default="", repr=False)
    resumed: bool = False  # the new version was added by an earlier, interrupted rotation

    @property
    def new_password(self) -> str:
        return split_credentials(self.secret_id, self.new_value)[1]


@dataclass
class RotationResult:
    rotated: list[SecretRotation]
    disabled: list[str]  # "secret version N"
    login_check: Check | None
    url: str


def _command(mlflow: bool, database: bool) -> str:
    flags = [] if mlflow == database else ["--mlflow"] if mlflow else ["--database"]
    return " ".join(["mlflow-gcp credentials rotate", *flags])


class Rotation(RollBack):
    def __init__(
        self, settings: Settings, *, mlflow: bool, database: bool, clients: Clients | None = None, log: Log = print
    ) -> None:
        if not mlflow and not database:
            mlflow = database = True
        self.settings = settings
        self.clients = clients or Clients(settings.project)
        self.log = log
        self.secret_ids = [s for s, wanted in ((SECRET_MLFLOW, mlflow), (SECRET_MYSQL, database)) if wanted]
        self.command = _command(mlflow, database)
        self.items: list[SecretRotation] = []
        self.marked: set[str] = set()  # secrets whose record says "rotating" because of this run
        self.db_changed = False
        self.rollout_started = False
        self.url = ""
        self._ctx = None
        self._service = None
        self._pins: dict[str, str] = {}
        self.doing = "preparing"  # the stage in progress, for the message of an interruption
        self.told_pending = False

    # -- helpers -------------------------------------------------------------------------------------------
    def _secret_path(self, secret_id: str) -> str:
        return f"projects/{self.settings.project}/secrets/{secret_id}"

    def _item(self, secret_id: str) -> SecretRotation | None:
        return next((i for i in self.items if i.secret_id == secret_id), None)

    def _call(self, fn):
        return retry.call(fn)

    def _record(self, secret_id: str, **values) -> None:
        record.write_record(self.clients.secrets(), self.settings.project, secret_id, self._call, **values)

    # -- stages --------------------------------------------------------------------------------------------
    def prepare(self, *, quiet: bool = False) -> None:
        """Read the service, the recorded versions and a version an earlier rotation left unfinished."""
        service = live_service.read_service(self.settings, self.clients)
        if service is None:
            raise MlflowGcpError(
                f"The Cloud Run service {self.settings.service} does not exist: there is nothing to rotate yet.",
                "Run `mlflow-gcp up` first.",
            )
        self.url = service.uri
        project = self.settings.project
        for secret_id in self.secret_ids:
            versions = record.read_versions(
                self.clients.secrets(),
                project,
                secret_id,
                self._call,
                in_use=lambda secret_id=secret_id: live_service.pinned_number(service, secret_id),
            )
            if versions is None:
                raise MlflowGcpError(
                    f"The secret {secret_id} does not exist, so nothing was rotated.",
                    "Run `mlflow-gcp up`: it makes a new password, applies it and rolls out the server that uses it.",
                )
            old_version = versions.target
            if old_version is None:
                if versions.restorable():
                    user = "the MLflow admin user" if secret_id == SECRET_MLFLOW else "the MySQL user"
                    raise record.lost_error(versions, user)
                raise MlflowGcpError(
                    f"The password in use of the secret {secret_id} cannot be read ({versions.describe_loss()}), "
                    "so nothing was rotated.",
                    "Run `mlflow-gcp up`: it makes a new password, applies it and rolls out the server that uses "
                    "it; then rotate if you still want to.",
                )
            old_value, _ = login_mod.access(self.clients, project, secret_id, old_version)
            item = SecretRotation(secret_id, split_credentials(secret_id, old_value)[0], old_version, old_value)
            for candidate in self._resumable(versions):
                value, _ = login_mod.access(self.clients, project, secret_id, candidate)
                if split_credentials(secret_id, value)[0] == item.login and value != old_value:
                    item.new_value, item.new_version, item.resumed = value, candidate, True
                    if not quiet:
                        self.log(
                            f"{secret_id}: version {candidate} was added by an earlier rotation that did not "
                            "finish: finishing it"
                        )
                    break
            self.items.append(item)
        self._service, self._pins = service, live_service.pinned_versions(service)

    @staticmethod
    def _resumable(versions: record.PasswordVersions) -> list[str]:
        """Versions an interrupted rotation left: the one it was applying, else the newest unapplied one."""
        out = []
        if versions.rotating and versions.rotating != versions.target and versions.usable(versions.rotating):
            out.append(versions.rotating)
        out += [n for n in reversed(versions.unapplied) if n not in out]
        return out

    def check_prerequisites(self) -> None:
        from mlflow_gcp.operate.rotation_versions import refuse_moving_the_server

        self.check_mlflow_version()
        try:
            ctx = self._deploy_context()
        except MlflowGcpError as error:
            raise RotationError(
                f"The deployment is not complete, so nothing was rotated: {error.message}",
                error.hint or "Run `mlflow-gcp up` first.",
            ) from error
        refuse_moving_the_server(ctx, self._service, self.command)

    def check_mlflow_version(self) -> None:
        """A rotation changes passwords, never MLflow (operate/rotation_versions.py)."""
        refuse_an_unfinished_upgrade(self._service, self.command)
        refuse_a_missing_image(self.settings, self.clients, self._service, self.command)
        if not self.told_pending:
            self.told_pending = True
            line = kept_image_line(self.settings, self.clients, self._service)
            if line:
                self.log(line)

    def check_reachable(self) -> None:
        """The new login is checked against the live server at the end: one that cannot be reached from here
        stops the rotation before anything is changed (not after two rollouts)."""
        health = check_health(self.url)
        if health.unreachable:
            raise RotationError(
                f"{self.url} cannot be reached from here ({health.detail}: a VPN, proxy or firewall?), so a new "
                "login could not be checked after the rollout. Nothing was changed: the old login keeps working.",
                f"Run `{self.command}` from a machine that reaches the server (where `mlflow-gcp status` shows its "
                "checks answering).",
            )

    def pin_in_use(self) -> None:
        """With `latest`, a new instance would start with a version added before it is rolled out: pin the
        versions in use first, so that adding one changes nothing until the rollout."""
        pins, service = self._pins, self._service
        floating = {
            i.secret_id: i.old_version for i in self.items if pins.get(i.secret_id, live_service.LATEST) == "latest"
        }
        if floating:
            self.log("the service refers to the latest secret versions: pinning the ones in use first")
            try:
                self._pin(service, floating)
            except Exception as error:
                raise RotationError(
                    f"Pinning the secret versions in use failed ({reason(error)}). No password was changed: the old "
                    "login keeps working.",
                    f"Fix the cause and run `{self.command}` again.",
                ) from error

    def add_versions(self) -> None:
        client = self.clients.secrets()
        for item in self.items:
            if item.new_version:
                continue
            value = f"{item.login}:{new_password()}"
            try:
                version = add_version_once(client, self._secret_path(item.secret_id), value)
            except Exception as error:
                raise RotationError(
                    f"Adding a new version to the secret {item.secret_id} failed ({reason(error)}). No password "
                    f"was changed: the old login keeps working.{self._unused_note()}",
                    f"Fix the cause and run `{self.command}` again.",
                ) from error
            item.new_value, item.new_version = value, version.rsplit("/", 1)[-1]
            self.log(f"{item.secret_id}: added version {item.new_version}")

    def mark_rotating(self) -> None:
        """Before any password changes: the record says which version is being applied."""
        for item in self.items:
            self._record(item.secret_id, rotating=item.new_version)
            self.marked.add(item.secret_id)

    def _set_db_password(self, password: str, what: str) -> None:
        from mlflow_gcp.engine.base import StepContext
        from mlflow_gcp.steps.sql_calls import SMALL_TIMEOUT, SqlCalls

        s = self.settings
        sql = SqlCalls(StepContext(settings=s, clients=self.clients))
        item = self._item(SECRET_MYSQL)
        assert item is not None
        body = {"name": item.login, "host": "%", "password": password}
        sql.write(
            lambda api: api.users().update(
                project=s.project, instance=s.db_instance, name=item.login, host="%", body=body
            ),
            what,
            SMALL_TIMEOUT,
        )

    def apply_database(self) -> None:
        item = self._item(SECRET_MYSQL)
        if item is None:
            return
        self.db_changed = True  # from here on, a failure puts the old password back (harmless if unchanged)
        self.log(f"Cloud SQL: setting the password of the MySQL user {item.login} (version {item.new_version})")
        self._set_db_password(
            split_credentials(SECRET_MYSQL, item.new_value)[1], f"Setting the password of the MySQL user {item.login}"
        )
        self.log(f"Cloud SQL: the password of the MySQL user {item.login} is now the one of version {item.new_version}")

    def _deploy_context(self):
        """What the deploy step needs (image, connector, ...), read once, before anything is changed: a
        deployment that is not complete stops the rotation before it starts."""
        if self._ctx is None:
            from mlflow_gcp.engine.base import Mode, StepContext
            from mlflow_gcp.engine.loop import run_step
            from mlflow_gcp.steps import prerequisites
            from mlflow_gcp.steps.deploy import ROTATION_ACTIVE
            from mlflow_gcp.steps.mlflow_version import KEEP_RUNNING_IMAGE
            from mlflow_gcp.steps.mlflow_version import running_image as live_service_image

            ctx = StepContext(settings=self.settings, clients=self.clients, mode=Mode.APPLY)
            # The image step is not read: the rollouts keep the image the service runs (not this mlflow-gcp's,
            # which may be another MLflow, or not built yet).
            check = ctx.for_step("", Mode.CHECK)
            for step in prerequisites(("deploy",)):
                if step.name != "image":
                    run_step(step, check)
            ctx.outputs.set("image.uri", live_service_image(self._service))
            ctx.outputs.set(KEEP_RUNNING_IMAGE, "1")
            ctx.outputs.set(ROTATION_ACTIVE, "1")
            self._ctx = ctx
        return self._ctx

    def roll_out(self, versions: dict[str, str]) -> None:
        """Run the deploy step with fresh outputs and `versions` pinned; the service must end up on them."""
        from mlflow_gcp.engine.loop import run_step
        from mlflow_gcp.errors import OperationFailedError
        from mlflow_gcp.steps import BY_NAME

        self.rollout_started = True
        ctx = self._deploy_context()
        ctx.outputs.update({f"secret_version.{secret}": version for secret, version in versions.items()})
        run_step(BY_NAME["deploy"], ctx)
        service = live_service.read_service(self.settings, self.clients)
        if any(live_service.pinned_versions(service).get(s) != v for s, v in versions.items()):
            self.log("the deploy step did not pin the secret versions: pinning them in the service directly")
            self._pin(service, versions)
            service = live_service.read_service(self.settings, self.clients)
        pins = live_service.pinned_versions(service)
        wrong = {s: v for s, v in versions.items() if pins.get(s) != v}
        if wrong:
            raise OperationFailedError(
                "The service does not run with "
                + ", ".join(f"version {v} of {s} (it has {pins.get(s, 'none')})" for s, v in wrong.items())
            )
        if not live_service.service_ready(service):
            raise OperationFailedError(f"The Cloud Run service {self.settings.service} is not ready after the rollout")
        self.url = service.uri

    def _pin(self, service, versions: dict[str, str]) -> None:
        """Set the secret versions of the service's environment (a new revision), keeping everything else."""
        from mlflow_gcp.gcp.operations import wait_gapic
        from mlflow_gcp.steps.deploy import DEPLOY_TIMEOUT, check_ready
        from mlflow_gcp.steps.service_json import from_json_dict, to_json_dict

        body = to_json_dict(service)
        for env in body["template"]["containers"][0].get("env", []):
            ref = env.get("valueSource", {}).get("secretKeyRef")
            if ref and ref.get("secret", "").rsplit("/", 1)[-1] in versions:
                ref["version"] = versions[ref["secret"].rsplit("/", 1)[-1]]
        client = self.clients.run_services()
        what = f"Pinning the secret versions of the Cloud Run service {self.settings.service}"
        operation = retry.call(lambda: client.update_service(request={"service": from_json_dict(body)}))
        check_ready(wait_gapic(operation, what=what, timeout=DEPLOY_TIMEOUT), what)

    def _login(self, new: bool) -> tuple[str, str]:
        mlflow = self._item(SECRET_MLFLOW)
        if mlflow is not None:
            return mlflow.login, mlflow.new_password if new else split_credentials(SECRET_MLFLOW, mlflow.old_value)[1]
        current = login_mod.current_login(self.settings, self.clients)
        return current.username, current.password

    def verify(self) -> Check:
        """The new login (or, for a database-only rotation, the unchanged one) works against the live service."""
        username, password = self._login(new=True)
        check = wait_for_login(self.url, username, password, log=self.log)
        if check.unreachable:
            raise RotationError(
                f"{self.url} cannot be reached from here ({check.detail}: a VPN, proxy or firewall?), so the new "
                "login could not be checked"
            )
        if not check.ok:
            raise RotationError(f"The new login was not accepted by {self.url}: {check.detail or check.status}.")
        health = check_health(self.url)
        if not health.ok:
            health = check_health(self.url)
            if not health.ok:
                raise RotationError(f"{self.url}/health {health.detail}.")
        self.log(f"the login works against {self.url}")
        return check

    def record_applied(self) -> None:
        for item in self.items:
            self._record(item.secret_id, applied=item.new_version, rotating=None)
            self.marked.discard(item.secret_id)

    def disable_old(self) -> list[str]:
        """Disable every enabled version of the rotated secrets except the one the service now uses."""
        from google.cloud import secretmanager_v1

        client = self.clients.secrets()
        enabled = secretmanager_v1.SecretVersion.State.ENABLED
        disabled: list[str] = []
        for item in self.items:
            versions = retry.call(
                lambda item=item: list(client.list_secret_versions(parent=self._secret_path(item.secret_id)))
            )
            for version in versions:
                number = version.name.rsplit("/", 1)[-1]
                if version.state == enabled and number != item.new_version:
                    set_version_state(client, version.name, "DISABLED")
                    disabled.append(f"{item.secret_id} version {number}")
                    self.log(f"{item.secret_id}: disabled version {number}")
        return disabled

    # -- the whole thing -----------------------------------------------------------------------------------
    def run(self) -> RotationResult:
        with Shield(self.log).installed() as shield:
            return self._run(shield)

    def _stage(self, doing: str, fn: Callable[[], object]):
        self.doing = doing
        return fn()

    def _run(self, shield: Shield) -> RotationResult:
        # Read-only checks first (a deployment that is not complete, a server not reachable from here: nothing
        # written, not even the lease), then the lease, then the reads again: what they found (the record, a version
        # an unfinished rotation left) may have been changing under another rotation until the lease was ours.
        self.prepare(quiet=True)
        self.check_prerequisites()
        self.check_reachable()
        lease = Lease(self.clients.secrets(), self._secret_path(SECRET_MLFLOW), self._call, self.command, self.log)
        lease.take()
        try:
            return self._rotate(shield)
        finally:
            shield.hold()
            lease.release()

    def _rotate(self, shield: Shield) -> RotationResult:
        self.items = []
        self.prepare()
        self.pin_in_use()
        try:
            self._stage("adding the new secret versions", self.add_versions)
            self._stage("recording the rotation on the secrets", self.mark_rotating)
            self._stage("setting the new MySQL password in Cloud SQL", self.apply_database)
            self.log("rolling out a revision with the new versions")
            self._stage(
                "rolling out a revision with the new versions",
                lambda: self.roll_out({i.secret_id: i.new_version for i in self.items}),
            )
            self.log(
                "rolled out a revision with " + ", ".join(f"{i.secret_id} version {i.new_version}" for i in self.items)
            )
            check = self._stage("checking the new login", self.verify)
        except (Exception, KeyboardInterrupt) as error:
            shield.hold()
            if isinstance(error, KeyboardInterrupt):
                self.log(f"interrupted while {self.doing}: undoing the rotation (a second Ctrl-C is ignored)")
            raise self.roll_back(error) from error
        # The new passwords are in place and work: finish, whatever arrives meanwhile.
        shield.hold("interrupted: ignored, the new passwords are in place and the rotation is finishing (a moment)")
        try:
            self.record_applied()
            disabled = self.disable_old()
        except Exception as error:
            raise RotationError(
                f"The new login works, but recording it or disabling the old versions failed ({reason(error)}). "
                "The service and the database use the new passwords.",
                f"Run `{self.command}` again to finish, or disable the old versions with `gcloud secrets versions "
                "disable VERSION --secret SECRET`.",
            ) from error
        return RotationResult(self.items, disabled, check, self.url)


def rotate(
    settings: Settings, *, mlflow: bool, database: bool, clients: Clients | None = None, log: Log = print
) -> RotationResult:
    return Rotation(settings, mlflow=mlflow, database=database, clients=clients, log=log).run()
