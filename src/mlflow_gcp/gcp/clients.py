"""The one place that builds Google API clients.

Endpoint rule: when MLFLOW_GCP_API_ENDPOINT is set, a request for `https://{api}.googleapis.com/{path}` goes
to `$MLFLOW_GCP_API_ENDPOINT/{api}/{path}` with anonymous credentials. Client libraries are imported lazily:
`mlflow-gcp --help` must not pay for them.
"""

from __future__ import annotations

import importlib
import os
import threading
from functools import cached_property
from typing import Any

from mlflow_gcp.errors import CredentialsError

ENDPOINT_ENV = "MLFLOW_GCP_API_ENDPOINT"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


def endpoint_base() -> str | None:
    base = os.environ.get(ENDPOINT_ENV, "").strip()
    return base.rstrip("/") or None


def api_root(api: str) -> str:
    """`https://{api}.googleapis.com`, or its replacement under the endpoint rule (no trailing slash)."""
    base = endpoint_base()
    return f"{base}/{api}" if base else f"https://{api}.googleapis.com"


def billed_to_target(credentials, project: str):
    """User credentials (`gcloud auth application-default login`) carry a quota project, which some APIs bill
    and check instead of the target project: it may be another project, or none
    (https://github.com/hashicorp/terraform-provider-google/issues/10066). The deployment's project is billed
    instead (the `x-goog-user-project` header), as with `gcloud auth application-default set-quota-project`.
    Service-account credentials bill their own project already and are left alone."""
    from google.oauth2 import credentials as user_credentials

    if isinstance(credentials, user_credentials.Credentials) and credentials.quota_project_id != project:
        return credentials.with_quota_project(project)
    return credentials


def send_once_http():
    """An httplib2 connection for discovery clients that never resends a mutating request by itself.

    httplib2 takes a connection closed before the answer for a stale keep-alive connection and sends the request
    again, whatever its method: a Cloud SQL users.insert or an IAM create that Google had applied (its answer
    lost) would then be applied twice, unseen. Here a POST, PUT, PATCH or DELETE is sent once per call; the error
    goes up to retry.call, which reads the state back before sending again."""
    import httplib2
    from googleapiclient.http import DEFAULT_HTTP_TIMEOUT_SEC

    class SendOnceHttp(httplib2.Http):
        def _conn_request(self, conn, request_uri, method, body, headers):
            try:
                return self._send_once(conn, request_uri, method, body, headers)
            except BaseException:
                # A request cut short (Ctrl-C or SIGTERM in the middle of it) leaves its connection mid-exchange, and
                # httplib2 would use it for the next request: that one then waits for an answer that never comes
                # (a rotation's roll-back timed out that way). Closed, the next request opens a connection of its own.
                conn.close()
                raise

        def _send_once(self, conn, request_uri, method, body, headers):
            if method in ("GET", "HEAD"):
                return super()._conn_request(conn, request_uri, method, body, headers)
            sent: list[bool] = []
            send = conn.request

            def send_once(*args, **kwargs):
                if sent:
                    raise ConnectionResetError(
                        f"The connection closed before Google answered {method} {request_uri}; not sent again here "
                        "(Google may have applied it)."
                    )
                sent.append(True)
                return send(*args, **kwargs)

            conn.request = send_once
            try:
                return super()._conn_request(conn, request_uri, method, body, headers)
            finally:
                del conn.request

    http = SendOnceHttp(timeout=DEFAULT_HTTP_TIMEOUT_SEC)
    http.redirect_codes = http.redirect_codes - {308}  # as googleapiclient's build_http: 308 is not a redirect
    return http


class Clients:
    """Builds and caches clients for one project. GAPIC REST clients are shared across threads; discovery
    clients (httplib2) are not thread-safe, so each thread gets its own."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}
        self._local = threading.local()

    @cached_property
    def credentials(self):
        if endpoint_base():
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError as e:
            raise CredentialsError(
                "No Google Cloud credentials were found.",
                "Run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file.",
            ) from e
        return billed_to_target(credentials, self.project)

    def _gapic(self, key: str, api: str, build):
        with self._lock:
            if key not in self._cache:
                from google.api_core.client_options import ClientOptions

                options = ClientOptions(api_endpoint=api_root(api)) if endpoint_base() else None
                self._cache[key] = build(credentials=self.credentials, transport="rest", client_options=options)
            return self._cache[key]

    def prewarm(self) -> None:
        """Import the client libraries in the background while the first step waits on Google: importing them
        costs seconds of CPU that would otherwise sit on the critical path of `up`. Errors are left to the step
        that needs the client, which reports them properly."""

        def build_all() -> None:
            # Service Usage first: the apis step needs it at once, and the other imports then overlap its wait.
            for factory in (
                self.service_usage,
                lambda: importlib.import_module("googleapiclient.discovery"),  # network, database, IAM
                self.secrets,
                self.run_services,
                self.vpc_access,
                self.storage,
                self.artifact_registry,
                self.cloud_build,
            ):
                try:
                    factory()
                except Exception:
                    return

        threading.Thread(target=build_all, name="prewarm-clients", daemon=True).start()

    # Cloud Run v2
    def run_services(self):
        from google.cloud import run_v2

        return self._gapic("run.services", "run", run_v2.ServicesClient)

    def run_jobs(self):
        from google.cloud import run_v2

        return self._gapic("run.jobs", "run", run_v2.JobsClient)

    def run_executions(self):
        from google.cloud import run_v2

        return self._gapic("run.executions", "run", run_v2.ExecutionsClient)

    def run_tasks(self):
        from google.cloud import run_v2

        return self._gapic("run.tasks", "run", run_v2.TasksClient)

    # Cloud Logging v2: the discovery client the library bundles (no extra dependency)
    def logging(self):
        return self.discovery("logging", "v2")

    # Secret Manager v1
    def secrets(self):
        from google.cloud import secretmanager_v1

        return self._gapic("secretmanager", "secretmanager", secretmanager_v1.SecretManagerServiceClient)

    # Service Usage v1
    def service_usage(self):
        from google.cloud import service_usage_v1

        return self._gapic("serviceusage", "serviceusage", service_usage_v1.ServiceUsageClient)

    # Serverless VPC Access v1
    def vpc_access(self):
        from google.cloud import vpcaccess_v1

        return self._gapic("vpcaccess", "vpcaccess", vpcaccess_v1.VpcAccessServiceClient)

    # Artifact Registry v1
    def artifact_registry(self):
        from google.cloud import artifactregistry_v1

        return self._gapic("artifactregistry", "artifactregistry", artifactregistry_v1.ArtifactRegistryClient)

    # Cloud Build v1
    def cloud_build(self):
        from google.cloud.devtools import cloudbuild_v1

        return self._gapic("cloudbuild", "cloudbuild", cloudbuild_v1.CloudBuildClient)

    # Compute Engine v1: the discovery client, because importing the GAPIC library (compute_v1) takes several
    # seconds on every run for the three calls the network step makes.
    def compute(self):
        return self.discovery("compute", "v1", service_path="compute/v1/")

    # Cloud Storage JSON API
    def storage(self):
        with self._lock:
            if "storage" not in self._cache:
                from google.cloud import storage

                options = {"api_endpoint": api_root("storage")} if endpoint_base() else None
                self._cache["storage"] = storage.Client(
                    project=self.project, credentials=self.credentials, client_options=options
                )
            return self._cache["storage"]

    # APIs without a REST GAPIC library: discovery clients from the bundled static documents.
    def discovery(self, api: str, version: str, service_path: str = ""):
        """A discovery client for `api` (e.g. "sqladmin", "iam", "servicenetworking"), one per thread.
        `service_path` is the API's servicePath, which the endpoint override replaces along with the host."""
        cache = self._local.__dict__.setdefault("discovery", {})
        key = (api, version)
        if key not in cache:
            import google_auth_httplib2
            from googleapiclient.discovery import build

            options = {"api_endpoint": f"{api_root(api)}/{service_path}"} if endpoint_base() else None
            cache[key] = build(
                api,
                version,
                http=google_auth_httplib2.AuthorizedHttp(self.credentials, http=send_once_http()),
                static_discovery=True,
                cache_discovery=False,
                client_options=options,
            )
        return cache[key]

    def sqladmin(self):
        return self.discovery("sqladmin", "v1")

    def iam(self):
        return self.discovery("iam", "v1")

    def service_networking(self):
        return self.discovery("servicenetworking", "v1")

    def resource_manager(self):
        return self.discovery("cloudresourcemanager", "v1")

    def billing(self):
        return self.discovery("cloudbilling", "v1")

    def org_policy(self):
        return self.discovery("orgpolicy", "v2")
