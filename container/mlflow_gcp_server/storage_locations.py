"""Storage addresses a caller may name: only those the server itself would have chosen.

The server reads and writes the artifact bucket with its own service account, and MLflow lets a
request say *where*: an experiment's `artifact_location`, a model version's `source`, a trace's
`mlflow.artifactLocation` tag... A caller who names another experiment's folder, another bucket or
the server's disk would read or write there with the server's credentials (issue 19). Every request
field whose name looks like a storage address is classified in location_fields.py, the way route_policy.py
classifies paths; the image build fails on an MLflow whose requests carry one not classified yet
(check_classification, run by check_mlflow_compat.py). This module checks the requests.

Allowed addresses, for admins too:
- `mlflow-artifacts:/<experiment id>/...` (no host) where the caller may update that experiment;
- `runs:/<run id>/...` of a run the caller may read;
- `models:/<name>/<version or alias>` of a registered model, `models:/<model id>` of a logged model,
  the caller may read;
- none at all: the server chooses (experiments/create without `artifact_location`).
Everything else (`gs://`, `s3://`, `file://`, bare paths, `http://`) is refused with a 400 saying so.

Location tags are checked twice: at the JSON routes that set trace tags (a clear 400), and where the
server reads a trace's data (trace_locations.py), because OTLP exports carry trace tags too
(`mlflow.traceTag.*` span attributes) in protobuf bodies this module does not parse.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

from mlflow_gcp_server.location_fields import (
    FIELDS,
    LOCATION_TAGS,
    ClassificationError,
    FieldKind,
    location_like_fields,
    location_tags_of_mlflow,
    served_services,
)
from mlflow_gcp_server.trace_locations import guard_trace_locations

ALLOWED = ("Allowed: none (the server chooses), 'mlflow-artifacts:/<experiment id>/...' of an experiment you "
           "may edit, 'runs:/<run id>/...' of a run you may read, 'models:/<name>/<version>' or "
           "'models:/<model id>' you may read; never gs://, s3://, file:// or a path (mlflow-gcp).")


# The MLflow functions this module calls.
REQUIRED = {
    "mlflow.server.auth": ("authenticate_request", "sender_is_admin", "_get_experiment_permission",
                           "_authorize_run_id", "_authorize_logged_model_id",
                           "_get_registered_model_or_prompt_permission"),
    "mlflow.server.handlers": ("get_service_endpoints", "_get_request_message", "catch_mlflow_exception",
                               "_get_tracking_store", "_get_model_registry_store"),
    "mlflow.store.artifact.utils.models": ("_parse_model_uri",),
    "mlflow.prompt.constants": ("_PROMPT_SOURCE_PLACEHOLDERS",),
}


def check_classification(services=None) -> str:
    """Fail if a request field or tag that looks like a storage address is not classified here, or if
    MLflow no longer has what the checks call."""
    import importlib

    missing = [f"{module}.{name}" for module, names in REQUIRED.items() for name in names
               if not hasattr(importlib.import_module(module), name)]
    if missing:
        raise ClassificationError(f"MLflow no longer has: {missing}")
    found = location_like_fields(services)
    unclassified = sorted(f"{message}.{field} ({rpc})" for (message, field), rpc in found.items()
                          if (message, field) not in FIELDS)
    if unclassified:
        raise ClassificationError(
            "request fields that look like storage addresses are not classified in "
            f"mlflow_gcp_server/location_fields.py FIELDS (read MLflow's handler: does the server read or write "
            f"where it says? then make it a checked LOCATION): {unclassified}")
    tags = location_tags_of_mlflow() - LOCATION_TAGS
    if tags:
        raise ClassificationError(f"location tags not in LOCATION_TAGS: {sorted(tags)}")
    checked = {message for (message, _), kind in FIELDS.items() if kind.kind is FieldKind.LOCATION}
    if missing := checked - set(CHECKS):
        raise ClassificationError(f"LOCATION fields of requests this module does not check: {sorted(missing)}")
    locations = sum(kind.kind is FieldKind.LOCATION for kind in FIELDS.values())
    return f"{len(found)} address-like request fields, {locations} checked locations, {len(LOCATION_TAGS)} tags"


# --- Addresses ---------------------------------------------------------------------------------------------------

class Refused(Exception):
    """A storage address the caller may not name; the message says what is allowed."""


@dataclass(frozen=True)
class Address:
    scheme: str  # "mlflow-artifacts", "runs" or "models"
    parts: tuple[str, ...]  # path segments, never empty, "." or ".."


def parse_address(value: str) -> Address:
    """The server's own kinds of address, in a canonical form; Refused for anything else."""
    if any(character in value for character in "%\\\x00") or value != value.strip():
        raise Refused(f"'{value}' has characters a storage address of this server never has.")
    split = urllib.parse.urlsplit(value)
    scheme = split.scheme.lower()
    if scheme not in ("mlflow-artifacts", "runs", "models"):
        raise Refused(f"'{value}' is not an address this server chooses.")
    if split.netloc or split.query or split.fragment or "?" in value or "#" in value:
        raise Refused(f"'{value}' names a host, a query or a fragment.")
    parts = tuple(part for part in split.path.split("/") if part)
    if not parts or any(part in (".", "..") for part in parts):
        raise Refused(f"'{value}' has no path or a relative segment.")
    if posixpath.normpath("/" + "/".join(parts)) != "/" + "/".join(parts):
        raise Refused(f"'{value}' is not a canonical path.")
    return Address(scheme, parts)


class Caller:
    """The logged-in user of the current Flask request, with MLflow's permission store behind."""

    def __init__(self):
        from mlflow.server import auth

        self.auth = auth
        self.username = auth.authenticate_request().username
        self._is_admin: bool | None = None

    @property
    def is_admin(self) -> bool:
        if self._is_admin is None:
            self._is_admin = bool(self.auth.sender_is_admin())
        return self._is_admin

    def may_update_experiment(self, experiment_id: str) -> bool:
        if not experiment_id.isdigit() or not self._exists(self._tracking_store().get_experiment, experiment_id):
            return False
        return self.is_admin or self.auth._get_experiment_permission(experiment_id, self.username).can_update

    def may_read_run(self, run_id: str) -> bool:
        if not self._exists(self._tracking_store().get_run, run_id):
            return False
        return self.is_admin or self.auth._authorize_run_id(run_id, "read")

    def may_read_logged_model(self, model_id: str) -> bool:
        if not self._exists(self._tracking_store().get_logged_model, model_id):
            return False
        return self.is_admin or self.auth._authorize_logged_model_id(model_id, "read")

    def may_read_registered_model(self, name: str) -> bool:
        from mlflow.server.handlers import _get_model_registry_store

        if not self._exists(_get_model_registry_store().get_registered_model, name):
            return False
        return self.is_admin or self.auth._get_registered_model_or_prompt_permission(name).can_read

    @staticmethod
    def _tracking_store():
        from mlflow.server.handlers import _get_tracking_store

        return _get_tracking_store()

    @staticmethod
    def _exists(fetch, key: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            fetch(key)
        except MlflowException:
            return False
        return True


def check_address(value: str, caller: Caller, field: str, *, sources: bool) -> None:
    """Refused unless `value` is an address the server would have chosen and the caller may use it.
    `sources`: `runs:/` and `models:/` are allowed (they name what the server then reads)."""
    try:
        address = parse_address(value)
    except Refused as error:
        raise Refused(f"'{field}' refused: {error} {ALLOWED}") from None
    if address.scheme == "mlflow-artifacts":
        allowed = caller.may_update_experiment(address.parts[0])
    elif not sources:
        allowed = False
    elif address.scheme == "runs":
        allowed = caller.may_read_run(address.parts[0])
    else:
        from mlflow.store.artifact.utils.models import _parse_model_uri

        try:
            parsed = _parse_model_uri(value)
        except Exception:
            allowed = False
        else:
            allowed = (caller.may_read_logged_model(parsed.model_id) if parsed.model_id
                       else caller.may_read_registered_model(parsed.name))
    if not allowed:
        raise Refused(f"'{field}' refused: '{value}' is not yours to use here (it does not exist, or you may "
                      f"not {'edit' if address.scheme == 'mlflow-artifacts' else 'read'} it). {ALLOWED}")


# --- The checks per request ---------------------------------------------------------------------------------------

def check_experiment(message, caller: Caller) -> None:
    # The address the server chooses is the new experiment's own folder, `mlflow-artifacts:/<its id>`, which
    # nobody can name before the id exists; any other would make two experiments share a folder, whose files
    # the artifact routes then authorize by the other experiment's permissions.
    if message.artifact_location:
        raise Refused(f"'artifact_location' refused: '{message.artifact_location}'. Leave it out: the server "
                      "stores each experiment under its own folder of the artifact bucket, "
                      "'mlflow-artifacts:/<experiment id>' (mlflow-gcp).")


def check_model_version(message, caller: Caller) -> None:
    from mlflow.prompt.constants import _PROMPT_SOURCE_PLACEHOLDERS

    if message.source in _PROMPT_SOURCE_PLACEHOLDERS:
        return  # a prompt's placeholder, not an address (MLflow requires it for prompts)
    check_address(message.source, caller, "source", sources=True)


def check_workspace(message, caller: Caller) -> None:
    if message.default_artifact_root.strip():
        raise Refused("'default_artifact_root' refused: workspaces store under the server's own artifact "
                      "destination (mlflow-gcp).")
    if message.HasField("trace_archival_config") and message.trace_archival_config.location.strip():
        raise Refused("'trace_archival_config.location' refused: traces are stored under the server's own "
                      "artifact destination (mlflow-gcp).")


def _refuse_location_tags(keys) -> None:
    if refused := sorted(set(keys) & LOCATION_TAGS):
        raise Refused(f"Trace tags {refused} are set by the server only: it chooses where a trace's data is "
                      "stored (mlflow-gcp).")


def check_trace_v2(message, caller: Caller) -> None:
    _refuse_location_tags(tag.key for tag in message.tags)


def check_trace_v3(message, caller: Caller) -> None:
    _refuse_location_tags(message.trace.trace_info.tags.keys())


def check_trace_tag(message, caller: Caller) -> None:
    _refuse_location_tags([message.key])


CHECKS = {
    "mlflow.CreateExperiment": check_experiment,
    "mlflow.CreateModelVersion": check_model_version,
    "mlflow.CreateWorkspace": check_workspace,
    "mlflow.UpdateWorkspace": check_workspace,
    "mlflow.TraceArchivalConfig": check_workspace,  # only inside Create/UpdateWorkspace
    "mlflow.StartTrace": check_trace_v2,
    "mlflow.StartTraceV3": check_trace_v3,
    "mlflow.SetTraceTag": check_trace_tag,
    "mlflow.SetTraceTagV3": check_trace_tag,
}


def checked_routes(services=None) -> dict[tuple[str, str], type]:
    """(Flask rule, method) -> request class, for the requests CHECKS covers (REST and ajax paths)."""
    from mlflow.server.handlers import get_service_endpoints

    routes = {}
    for service in services or served_services():
        for path, request_class, methods in get_service_endpoints(service, lambda request_class: request_class):
            if request_class.DESCRIPTOR.full_name in CHECKS:
                routes.update({(path, method): request_class for method in methods})
    return routes


def install(flask_app) -> None:
    """Check the location fields of every create/update request that has one, after MLflow's login
    and permission checks (Flask runs before-request functions in order); other requests pay one dict
    lookup."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.server.handlers import _get_request_message, catch_mlflow_exception

    routes = checked_routes()

    @catch_mlflow_exception
    def check_storage_locations():
        from flask import request

        rule = request.url_rule
        request_class = rule is not None and routes.get((rule.rule, request.method))
        if not request_class:
            return None
        message = _get_request_message(request_class())
        try:
            CHECKS[request_class.DESCRIPTOR.full_name](message, Caller())
        except Refused as error:
            raise MlflowException(str(error), INVALID_PARAMETER_VALUE) from None
        return None

    flask_app.before_request(check_storage_locations)
    guard_trace_locations()
