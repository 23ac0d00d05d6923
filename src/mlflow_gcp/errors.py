"""The errors a user can meet. Each carries a hint that says what to do; the CLI turns them into exit codes."""

from __future__ import annotations


class MlflowGcpError(Exception):
    """An expected failure: shown as one paragraph, no traceback unless --debug."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(MlflowGcpError):
    """A setting is malformed; found before any API call."""

    exit_code = 2


class CredentialsError(MlflowGcpError):
    """No usable Application Default Credentials."""


class ApiDisabledError(MlflowGcpError):
    """A Google API the tool needs is not enabled on the project."""


class PermissionDeniedError(MlflowGcpError):
    """The caller lacks an IAM permission."""


class BillingError(MlflowGcpError):
    """Billing is not enabled on the project."""


class QuotaError(MlflowGcpError):
    """A quota is exhausted."""


class NameTakenError(MlflowGcpError):
    """A globally unique name (bucket, Cloud SQL instance) belongs to someone else or is reserved."""


class OrgPolicyError(MlflowGcpError):
    """An organization policy refuses what the tool asked for."""


class OperationFailedError(MlflowGcpError):
    """A long-running operation ended in error; the message is Google's."""


class BuildPermissionError(OperationFailedError):
    """A build ended in FAILURE because its own service account was denied a permission: a grant made minutes
    before that has not applied yet, or one that is missing."""


class OperationTimeoutError(MlflowGcpError):
    """A long-running operation did not finish within its deadline."""


class PrerequisiteMissingError(MlflowGcpError):
    """A step needs a resource that an earlier step makes."""


class ChangeNotAcceptedError(MlflowGcpError):
    """A change that restarts or replaces something was not accepted (no terminal to ask and no --yes, or the
    user said no). Raised before the change is sent."""


class GoogleApiError(MlflowGcpError):
    """Any other error answered by a Google API."""


class ServerCheckError(MlflowGcpError):
    """The deployed MLflow server did not answer as expected."""
