"""Where the server reads a trace's data: only the folder it chose for the trace.

A trace's location tags (`mlflow.artifactLocation`...) can reach the server in OTLP exports, whose protobuf
bodies storage_locations.py does not parse: every MLflow module that resolves a trace's data location is
wrapped (guard_trace_locations) so that a location the server did not choose is refused where it is read;
check_trace_guard (run by check_mlflow_compat.py) fails the image build on an MLflow that reads one unguarded.
"""

from __future__ import annotations

import sys

from mlflow_gcp_server.location_fields import ClassificationError

# Modules that bind MLflow's trace-location readers by name (check_trace_guard verifies the list).
TRACE_LOCATION_READERS = ("get_artifact_uri_for_trace", "get_archive_uri_for_trace")
TRACE_READER_MODULES = ("mlflow.tracing.utils.artifact_utils", "mlflow.server.handlers",
                        "mlflow.store.tracking.sqlalchemy_store", "mlflow.tracing.client",
                        "mlflow.genai.scorers.online.trace_loader")


def own_trace_uri(trace_info, uri: str) -> bool:
    """Is `uri` inside the folder the server gives this trace (under its experiment's location)?"""
    from mlflow.utils.uri import append_to_uri_path

    trace_id = getattr(trace_info, "trace_id", None) or getattr(trace_info, "request_id", None)
    experiment_id = str(trace_info.experiment_id or "")
    if not trace_id or not experiment_id:
        return False
    default = f"mlflow-artifacts:/{experiment_id}/traces/{trace_id}/artifacts"
    candidates = [default]
    if not _within(uri, default):
        from mlflow.server.handlers import _get_tracking_store

        experiment = _get_tracking_store().get_experiment(experiment_id)
        candidates.append(append_to_uri_path(experiment.artifact_location, "traces", trace_id, "artifacts"))
    return any(_within(uri, root) for root in candidates)


def _within(uri: str, root: str) -> bool:
    if any(character in uri for character in "%\\") or "/../" in f"{uri}/" or "/./" in f"{uri}/":
        return False
    return uri.rstrip("/") == root.rstrip("/") or uri.startswith(root.rstrip("/") + "/")


def guarded(reader):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    def read_checked(trace_info):
        uri = reader(trace_info)
        if not own_trace_uri(trace_info, uri):
            raise MlflowException(
                f"This trace's data location '{uri}' is not the one the server chose for it (a location tag set "
                "by a caller): refused (mlflow-gcp).", PERMISSION_DENIED)
        return uri

    read_checked.__wrapped__ = reader
    read_checked.__name__ = reader.__name__
    read_checked.mlflow_gcp_guarded = True
    return read_checked


def guard_trace_locations() -> None:
    """Make every module that resolves a trace's data location refuse locations the server did not choose."""
    import importlib

    from mlflow.tracing.utils import artifact_utils

    for module_name in TRACE_READER_MODULES:
        module = importlib.import_module(module_name)
        for name in TRACE_LOCATION_READERS:
            current = getattr(module, name, None)
            if current is not None and not getattr(current, "mlflow_gcp_guarded", False):
                original = getattr(artifact_utils, name)
                original = getattr(original, "__wrapped__", original)
                setattr(module, name, guarded(original))


def check_trace_guard() -> str:
    """Fail if a module of MLflow reads trace locations without the guard (an MLflow upgrade adding one)."""
    import pathlib

    import mlflow

    root = pathlib.Path(mlflow.__file__).parent
    readers = set()
    for path in root.rglob("*.py"):
        if "tests" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(name in text for name in TRACE_LOCATION_READERS):
            readers.add(".".join(path.relative_to(root.parent).with_suffix("").parts))
    if unknown := readers - set(TRACE_READER_MODULES):
        raise ClassificationError(f"MLflow modules read trace locations without the guard: {sorted(unknown)}")
    guard_trace_locations()
    unguarded = [f"{name}.{reader}" for name in TRACE_READER_MODULES for reader in TRACE_LOCATION_READERS
                 if (function := getattr(sys.modules[name], reader, None)) is not None
                 and not getattr(function, "mlflow_gcp_guarded", False)]
    if unguarded:
        raise ClassificationError(f"trace location readers left unguarded: {unguarded}")
    return f"{len(readers)} modules guarded"
