"""Which request fields and tags of MLflow name a storage address, and what the server does with each.

Every field of the served requests whose name looks like a storage address (LOCATION_LIKE) is classified in
FIELDS, the way route_policy.py classifies paths; storage_locations.py checks the LOCATION ones and fails the
image build on an MLflow whose requests carry a field not classified here (check_classification).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class FieldKind(str, Enum):
    LOCATION = "location"  # checked here: only addresses the server itself would have chosen
    ARTIFACT_PATH = "artifact path"  # a relative path inside a root the route's MLflow validator authorized
    REFERENCE = "reference"  # names an entity by id or name; MLflow's permission validators check it
    RECORDED = "recorded"  # stored or echoed as metadata, never read or written by the server
    NOT_SERVED = "not served"  # its route family is refused to everyone (route_policy.py)


@dataclass(frozen=True)
class FieldClass:
    kind: FieldKind
    why: str


def _c(kind: FieldKind, why: str) -> FieldClass:
    return FieldClass(kind, why)


L, P, R, M, N = (FieldKind.LOCATION, FieldKind.ARTIFACT_PATH, FieldKind.REFERENCE, FieldKind.RECORDED,
                 FieldKind.NOT_SERVED)

# Request fields (message full name, field name) of the services this server serves whose names look
# like a storage address (LOCATION_LIKE), each with what the server does with it. Read from MLflow
# 3.17.2's handlers (mlflow/server/handlers.py) and auth validators (mlflow/server/auth/__init__.py).
FIELDS: dict[tuple[str, str], FieldClass] = {
    ("mlflow.CreateExperiment", "artifact_location"): _c(L, "runs, traces and logged models of the experiment "
                                                            "are written under it"),
    ("mlflow.CreateWorkspace", "default_artifact_root"): _c(L, "experiments of the workspace are written under it"),
    ("mlflow.UpdateWorkspace", "default_artifact_root"): _c(L, "experiments of the workspace are written under it"),
    ("mlflow.TraceArchivalConfig", "location"): _c(L, "trace payloads of the workspace are archived there"),
    ("mlflow.CreateModelVersion", "source"): _c(L, "model-versions/get-artifact and get-download-uri read "
                                                   "the version's files from it (issue 19's read attack)"),
    ("mlflow.CreateDataset", "source"): _c(M, "where the caller's data came from, shown in the UI; "
                                              "the server never opens it"),
    ("mlflow.CreateDataset", "source_type"): _c(M, "a label"),
    ("mlflow.Dataset", "source"): _c(M, "log_inputs: where the caller's data came from, never opened"),
    ("mlflow.Dataset", "source_type"): _c(M, "a label"),
    ("mlflow.CreateLoggedModel", "source_run_id"): _c(R, "a run id; the model's location is chosen by the "
                                                         "server under its experiment"),
    ("mlflow.issues.CreateIssue", "source_run_id"): _c(R, "a run id"),
    ("mlflow.issues.CreateIssue", "root_causes"): _c(M, "free text"),
    ("mlflow.TraceInfoV3", "trace_location"): _c(R, "names the experiment the trace belongs to; the trace's "
                                                    "storage is derived from it by the server"),
    ("mlflow.SearchTracesV3", "locations"): _c(R, "experiments to search, checked by MLflow's validator"),
    ("mlflow.assessments.Assessment", "source"): _c(M, "who made the assessment (human, LLM judge, code)"),
    ("mlflow.assessments.AssessmentSource", "source_id"): _c(M, "who made the assessment"),
    ("mlflow.assessments.AssessmentSource", "source_type"): _c(M, "a label"),
    ("mlflow.ListArtifacts", "path"): _c(P, "inside the run's artifact root (MLflow refuses '..')"),
    ("mlflow.artifacts.ListArtifacts", "path"): _c(P, "inside the proxied root, authorized per experiment"),
    ("mlflow.artifacts.CreateMultipartUpload", "path"): _c(P, "inside the proxied root, authorized per experiment"),
    ("mlflow.artifacts.CompleteMultipartUpload", "path"): _c(P, "inside the proxied root, authorized per "
                                                                "experiment"),
    ("mlflow.artifacts.AbortMultipartUpload", "path"): _c(P, "inside the proxied root, authorized per experiment"),
    ("mlflow.artifacts.MultipartUploadPart", "url"): _c(M, "unused by the GCS repository, which composes the "
                                                          "parts by number and etag"),
    ("mlflow.CreatePresignedDownloadUrl", "path"): _c(P, "inside the artifact root of the run or model the "
                                                         "validator authorized"),
    ("mlflow.CreatePresignedUploadUrl", "path"): _c(P, "inside the artifact root of the run or model the "
                                                       "validator authorized"),
    ("mlflow.ListLoggedModelArtifacts", "artifact_directory_path"): _c(P, "inside the logged model's root"),
    ("mlflow.GetOnlineTraceDetails", "source_inference_table"): _c(M, "a Databricks table name, not a storage "
                                                                      "address of this server"),
    ("mlflow.GetOnlineTraceDetails", "source_databricks_request_id"): _c(M, "a Databricks request id"),
    ("mlflow.CreateGatewayEndpointBinding", "resource_type"): _c(N, "AI gateway (refused family)"),
    ("mlflow.CreateGatewayEndpointBinding", "resource_id"): _c(N, "AI gateway (refused family)"),
    ("mlflow.DeleteGatewayEndpointBinding", "resource_type"): _c(N, "AI gateway (refused family)"),
    ("mlflow.DeleteGatewayEndpointBinding", "resource_id"): _c(N, "AI gateway (refused family)"),
    ("mlflow.ListGatewayEndpointBindings", "resource_type"): _c(N, "AI gateway (refused family)"),
    ("mlflow.ListGatewayEndpointBindings", "resource_id"): _c(N, "AI gateway (refused family)"),
    ("mlflow.CreatePromptOptimizationJob", "source_prompt_uri"): _c(N, "prompt optimization (refused family)"),
    ("mlflow.CreateWebhook", "url"): _c(N, "webhooks (refused family)"),
    ("mlflow.UpdateWebhook", "url"): _c(N, "webhooks (refused family)"),
}

LOCATION_LIKE = re.compile(r"location|source|uri|url|path|root|destination|bucket|dir", re.IGNORECASE)

# Tags whose value the server resolves to storage (mlflow/tracing/utils/artifact_utils.py): refused in
# requests that set trace tags, and checked where the server reads a trace's data.
ARTIFACT_LOCATION_TAG = "mlflow.artifactLocation"
SPANS_LOCATION_TAG = "mlflow.trace.spansLocation"
ARCHIVE_LOCATION_TAG = "mlflow.trace.archiveLocation"
LOCATION_TAGS = frozenset({ARTIFACT_LOCATION_TAG, SPANS_LOCATION_TAG, ARCHIVE_LOCATION_TAG})


def served_services():
    from mlflow.protos import mlflow_artifacts_pb2, model_registry_pb2, service_pb2, webhooks_pb2

    return (service_pb2.MlflowService, model_registry_pb2.ModelRegistryService,
            mlflow_artifacts_pb2.MlflowArtifactsService, webhooks_pb2.WebhookService)


def location_like_fields(services=None) -> dict[tuple[str, str], str]:
    """Every field of the services' requests (nested messages included) whose name looks like a storage
    address, with the first RPC found to carry it."""
    found: dict[tuple[str, str], str] = {}
    visited: set[str] = set()

    def walk(descriptor, rpc: str) -> None:
        if descriptor.full_name in visited:
            return
        visited.add(descriptor.full_name)
        for field in descriptor.fields:
            if LOCATION_LIKE.search(field.name):
                found.setdefault((descriptor.full_name, field.name), rpc)
            if field.message_type is not None and not field.message_type.full_name.startswith("google."):
                walk(field.message_type, rpc)

    for service in services or served_services():
        for method in service.DESCRIPTOR.methods:
            visited.clear()
            walk(method.input_type, f"{service.DESCRIPTOR.name}.{method.name}")
    return found


def location_tags_of_mlflow() -> set[str]:
    """The tag keys MLflow declares as locations (constants named *LOCATION*)."""
    from mlflow.tracing.constant import TraceTagKey
    from mlflow.utils import mlflow_tags

    names = {value for name, value in vars(mlflow_tags).items() if "LOCATION" in name and isinstance(value, str)}
    names |= {value for name, value in vars(TraceTagKey).items() if "LOCATION" in name and isinstance(value, str)}
    return names


class ClassificationError(Exception):
    pass
