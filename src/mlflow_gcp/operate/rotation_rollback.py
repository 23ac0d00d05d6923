"""Undoing a rotation that failed or was interrupted before its new passwords were in place: the old database
password and the old secret versions back, the old login checked, the new versions destroyed (never used), and
a message that says what is in place."""

from __future__ import annotations

from mlflow_gcp.config import SECRET_MYSQL
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.operate.rotation_stops import RotationError, RotationInterrupted, reason
from mlflow_gcp.resources.secret import set_version_state, split_credentials
from mlflow_gcp.resources.server_check import wait_for_login


class RollBack:
    """The recovery of `Rotation` (operate/rotate.py), whose state and stages it uses."""

    # -- recovery ------------------------------------------------------------------------------------------
    def roll_back(self, error: BaseException) -> RotationError:
        """Put the old database password and the old versions back, check the old login, and destroy the new
        versions (never used) so that `latest` is the applied one again; say what is in place."""
        restored, problems, notes = [], [], []
        mysql = self._item(SECRET_MYSQL)
        if self.db_changed and mysql is not None:
            try:
                self._set_db_password(
                    split_credentials(SECRET_MYSQL, mysql.old_value)[1],
                    f"Putting back the old password of the MySQL user {mysql.login}",
                )
                restored.append(f"the MySQL user {mysql.login} has its old password again")
            except Exception as e:  # reported below with what to do by hand
                problems.append(
                    f"putting back the old password of the MySQL user {mysql.login} failed ({reason(e)}): run "
                    "`mlflow-gcp up`, which sets it to the recorded version, or "
                    f"`{self.command}` to finish the rotation"
                )
        if self.rollout_started:
            old = {i.secret_id: i.old_version for i in self.items}
            try:
                self.roll_out(old)
                restored.append(
                    "the service runs with " + ", ".join(f"version {v} of {s}" for s, v in old.items()) + " again"
                )
            except Exception as e:
                problems.append(f"putting the service back on the old versions failed ({reason(e)})")
        if not problems and self.url and self.rollout_started:
            try:
                username, password = self._login(new=False)
                check = wait_for_login(self.url, username, password, log=self.log)
                if check.unreachable:
                    notes.append(f"the old login could not be checked: {self.url} cannot be reached ({check.detail})")
                elif not check.ok:
                    problems.append(f"the old login is not accepted by {self.url} ({check.detail or check.status})")
            except MlflowGcpError as e:
                problems.append(f"the old login could not be checked ({reason(e)})")
        if not problems:
            restored += self._undo_versions(problems)
        interrupted = isinstance(error, KeyboardInterrupt)
        message = f"The rotation stopped: {reason(error)}" + (f" while {self.doing}." if interrupted else ".")
        if restored:
            message += " Rolled back: " + "; ".join(restored) + "."
        if problems:
            message += " Not rolled back: " + "; ".join(problems) + "."
        elif notes:
            message += " The old passwords are in place again (" + "; ".join(notes) + ")."
        else:
            checked = " (checked against the service)" if self.rollout_started else ""
            message += f" The old login keeps working{checked}."
        hint = f"Run `{self.command}` again." if interrupted else f"Fix the cause and run `{self.command}` again."
        if problems:
            hint += (
                " Until then, `mlflow-gcp up` deploys only the recorded versions (the ones the users have) and puts "
                "the recorded MySQL password back if needed."
            )
        return (RotationInterrupted if interrupted else RotationError)(message, hint)

    def _undo_versions(self, problems: list[str]) -> list[str]:
        """Destroy the versions this rotation added or took up (never applied) and clear its marks."""
        client = self.clients.secrets()
        done = []
        for item in self.items:
            try:
                if item.new_version:
                    name = f"{self._secret_path(item.secret_id)}/versions/{item.new_version}"
                    set_version_state(client, name, "DESTROYED")
                    done.append(f"version {item.new_version} of {item.secret_id} destroyed (never used)")
                if item.secret_id in self.marked:
                    self._record(item.secret_id, rotating=None)
                    self.marked.discard(item.secret_id)
            except Exception as e:
                problems.append(
                    f"destroying the unused version {item.new_version} of {item.secret_id} failed ({reason(e)}); "
                    "`mlflow-gcp up` ignores it, and a new rotation takes it up"
                )
        return done
