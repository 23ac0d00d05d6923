"""Cloud Build v1: builds (create, get, list, cancel; global and regional paths) and their long-running
operations.

A build is QUEUED, WORKING after `cloudbuild.start` latency, and ends after `cloudbuild.build` latency. It
needs its source (`source.storageSource`) in the storage fake, as a .tar.gz with a Dockerfile at its root for a
`docker build`; on SUCCESS each of `images` is pushed to the Artifact Registry fake (that is how a rerun sees
the image), and a missing repository fails the push as Google's does. `fake.cloudbuild_fail_next(status,
detail)` makes the next build end in FAILURE, TIMEOUT or INTERNAL_ERROR. `fake.builds()` lists the builds;
`fake.state["most_builds_at_once"]` is the most builds queued or running at once (counting the one created).

Option `fake.cloudbuild_refused_regions` (a set of regions): builds.create there answers 400 FAILED_PRECONDITION
"due to quota restrictions, cannot run builds in this region", as Google does on new or low-usage projects outside
a few regions (https://cloud.google.com/build/docs/locations; google-github-actions/deploy-cloudrun#480). `global`
is never refused.

The account a build runs as (https://cloud.google.com/build/docs/cloud-build-service-account-updates):
- A build naming `serviceAccount` must say where its logs go (`options.logging` CLOUD_LOGGING_ONLY or NONE, a
  `logsBucket`, or REGIONAL_USER_OWNED_BUCKET); otherwise builds.create answers 400, as Google does
  (https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts). The account must
  exist (400 otherwise).
- Such a build needs its account to hold, in the fake's IAM policies: read on the source bucket
  (roles/storage.objectViewer or more, on the bucket or the project), push to each image's repository
  (roles/artifactregistry.writer or more, on the repository or the project) and, unless logging is NONE,
  roles/logging.logWriter on the project. Without one of them the build ends in FAILURE with Google's reason.
- Grants apply minutes after they are made (https://cloud.google.com/iam/docs/access-change-propagation): with
  `fake.grant_propagation` set (server.py, counted), each of those three grants made to the build's account is
  refused by that many builds after it is made; such a build ends in FAILURE with Google's reason, as a build on
  a fresh grant does (https://cloud.google.com/build/docs/troubleshooting; "does not have storage.objects.get access
  to the Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist)",
  GoogleCloudPlatform/bigquery-dlp-remote-function#70, hashicorp/terraform-provider-google#8942; "Permission
  \"artifactregistry.repositories.uploadArtifacts\" denied"). Every build checks all three, so N builds fail.
  failureInfo.type is FETCH_SOURCE_FAILED or PUSH_NOT_AUTHORIZED, the FailureType Google names for these.
- The caller must be allowed to act as the account a build names (`iam.serviceAccounts.actAs`,
  https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts). With
  "iam.serviceAccounts.actAs" in `fake.state["denied_permissions"]` (the caller lacks it on the project; see
  cloudresourcemanager.py), builds.create naming an account answers 403 PERMISSION_DENIED "caller does not have
  permission to act as service account projects/-/serviceAccounts/ID" (as gcloud shows it, e.g.
  kohei321dev/spot-diggz#164), unless the account's own policy grants the caller roles/iam.serviceAccountUser
  (or owner/editor) on it.
- A build naming no account runs as the Compute Engine default account. Option `fake.secure_by_default_org`
  (False by default): the project is in an organisation created since May 2024, where
  `iam.automaticIamGrantsForDefaultServiceAccounts` leaves that account without any role
  (https://cloud.google.com/resource-manager/docs/secure-by-default-organizations), so its builds fail the same
  checks. Otherwise it holds roles/editor on the project, as it did before, and its builds pass.

Option `fake.cloudbuild_reads_to_finish` (an int; None by default): a build ends at its N-th read (get of the build)
instead of after the `cloudbuild.build` latency, so a test can hold a build in progress across an interrupted run
whatever the machine's speed.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import tarfile
import uuid

from tests.fake_gcp.apis.artifactregistry import _IMAGE as IMAGE
from tests.fake_gcp.apis.cloudresourcemanager import OWNER
from tests.fake_gcp.apis.iam import ACT_AS_ROLES
from tests.fake_gcp.server import (
    PROJECT_NUMBER,
    ApiError,
    FakeGoogle,
    Request,
    not_found,
    operation_named,
    parse_message,
    route_regional_operations,
)

BUILD_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1.Build"
METADATA_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"
DEFAULT_BUILD_ACCOUNT = "compute@developer.gserviceaccount.com"
TIME = "2026-11-26T00:00:00.000000Z"
TERMINAL = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
# Build.FailureInfo.FailureType has no value for an internal error: Google leaves it unspecified.
FAILURE_TYPES = {"FAILURE": "USER_BUILD_STEP", "TIMEOUT": "USER_BUILD_STEP"}


def normalized(raw: bytes) -> dict:
    """The Build as Google reads it: integer enums become names; an unknown field is a 400."""
    from google.cloud.devtools import cloudbuild_v1

    return parse_message(raw, cloudbuild_v1.Build)


def register(fake: FakeGoogle) -> None:
    builds: dict[str, dict] = fake.state.setdefault("builds", {})
    operations: dict[str, dict] = fake.state.setdefault("build_operations", {})
    failures: list[tuple[str, str]] = []

    def fail_next(status: str = "FAILURE", detail: str = "") -> None:
        """Test switch: the next build ends with `status` (FAILURE, TIMEOUT, INTERNAL_ERROR)."""
        failures.append((status, detail))

    fake.cloudbuild_fail_next = fail_next
    fake.cloudbuild_refused_regions = set()
    fake.secure_by_default_org = False
    fake.cloudbuild_reads_to_finish = None
    reads_left: dict[str, int] = {}  # by build key, while counted
    finishers: dict[str, object] = {}
    fake.builds = lambda: [copy.deepcopy(b) for b in builds.values()]

    def source_problem(build: dict) -> str | None:
        """Why a `docker build` of the source fails, as the build log would say, or None."""
        storage = build.get("source", {}).get("storageSource", {})
        objects = fake.state.get("objects", {}).get(storage.get("bucket", ""), {})
        obj = objects.get(storage.get("object", ""))
        if obj is None:
            return None  # refused at create time
        try:
            with tarfile.open(fileobj=io.BytesIO(obj["data"]), mode="r:gz") as archive:
                names = {m.name.removeprefix("./") for m in archive.getmembers()}
        except (tarfile.TarError, OSError, EOFError):
            return "failed to unpack the source archive: it is not a gzipped tar file"
        args = build["steps"][0].get("args", []) if build.get("steps") else []
        if args[:1] == ["build"] and "Dockerfile" not in names:
            return (
                "Step #0: unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat "
                "/workspace/Dockerfile: no such file or directory"
            )
        return None

    def roles_of(member: str, policy_key: str) -> set[str]:
        policy = fake.policies.get(policy_key, {})
        return {
            b["role"] for b in policy.get("bindings", []) if member in b.get("members", []) and not b.get("condition")
        }

    def holds(member: str, keys: list[str], roles: set[str]) -> bool:
        """The member holds one of `roles` on one of `keys`, and that grant has applied. Every grant it holds is
        checked (each check counts towards its propagation), as Google applies them side by side."""
        held = [(key, role) for key in keys for role in sorted(roles_of(member, key) & roles)]
        return any([fake.grant_applied(key, role, member) for key, role in held])

    def permission_problem(build: dict) -> tuple[str, str] | None:
        """Why the build's account cannot run it, as (FailureType, the build's failure detail), or None."""
        account = build["serviceAccount"].rsplit("/", 1)[-1]
        member = f"serviceAccount:{account}"
        project = f"projects/{build['projectId']}"
        editor = account.endswith(DEFAULT_BUILD_ACCOUNT) and not fake.secure_by_default_org
        broad = {"roles/owner", "roles/editor"}
        problems: list[tuple[str, str]] = []
        storage = build.get("source", {}).get("storageSource", {})
        if storage:
            readers = broad | {
                "roles/storage.objectViewer",
                "roles/storage.objectUser",
                "roles/storage.objectAdmin",
                "roles/storage.admin",
            }
            if not holds(member, [project, f"projects/_/buckets/{storage.get('bucket')}"], readers) and not editor:
                problems.append(
                    (
                        "FETCH_SOURCE_FAILED",
                        f"failed to fetch the source: {account} does not have storage.objects.get access to the "
                        f"Google Cloud Storage object gs://{storage.get('bucket')}/{storage.get('object')}. "
                        "Permission 'storage.objects.get' denied on resource (or it may not exist).",
                    )
                )
        writers = broad | {
            "roles/artifactregistry.writer",
            "roles/artifactregistry.repoAdmin",
            "roles/artifactregistry.admin",
        }
        for image in build.get("images", []):
            match = IMAGE.match(image)
            if match is None:
                continue
            repository = f"projects/{match['project']}/locations/{match['location']}/repositories/{match['repository']}"
            if not holds(member, [project, repository], writers) and not editor:
                problems.append(
                    (
                        "PUSH_NOT_AUTHORIZED",
                        f'failed to push {image}: denied: Permission "artifactregistry.repositories.uploadArtifacts" '
                        f'denied on resource "{repository}" (or it may not exist)',
                    )
                )
        logging = build.get("options", {}).get("logging") != "NONE"
        if logging and not holds(member, [project], broad | {"roles/logging.logWriter"}) and not editor:
            problems.append(
                (
                    "USER_BUILD_STEP",
                    f"The service account running this build ({account}) does not have permission to write logs to "
                    "Cloud Logging. To fix this, grant the Logs Writer (roles/logging.logWriter) role to the "
                    "service account.",
                )
            )
        return problems[0] if problems else None

    def check_act_as(account: str) -> None:
        """The caller may act as the account the build names: on the project, or by a grant on the account."""
        if "iam.serviceAccounts.actAs" not in set(fake.state.get("denied_permissions", ())):
            return
        stored = fake.service_account(account)
        if stored and any(OWNER in fake.members(stored["name"], role) for role in ACT_AS_ROLES):
            return
        raise ApiError(
            403,
            "caller does not have permission to act as service account projects/-/serviceAccounts/"
            + str((stored or {}).get("uniqueId", account)),
            status="PERMISSION_DENIED",
        )

    def check_account(body: dict) -> None:
        if not body.get("serviceAccount"):
            return
        options = body.get("options", {})
        if not (
            options.get("logging") in ("CLOUD_LOGGING_ONLY", "NONE")
            or body.get("logsBucket")
            or options.get("defaultLogsBucketBehavior") == "REGIONAL_USER_OWNED_BUCKET"
        ):
            raise ApiError(
                400,
                "invalid build: if 'build.service_account' is specified, the build must either (a) specify "
                "'build.logs_bucket', (b) use the REGIONAL_USER_OWNED_BUCKET "
                "build.options.default_logs_bucket_behavior option, or (c) use either CLOUD_LOGGING_ONLY / NONE "
                "logging options",
                status="INVALID_ARGUMENT",
            )
        account = body["serviceAccount"].rsplit("/", 1)[-1]
        if fake.service_account(account) is None:
            raise ApiError(400, f"invalid build: service account {account} does not exist", status="INVALID_ARGUMENT")
        check_act_as(account)

    def create(req: Request, location: str):
        project = req.params["project"]
        if location in fake.cloudbuild_refused_regions:
            raise ApiError(
                400,
                "failed precondition: due to quota restrictions, cannot run builds in this region. "
                "Please contact support",
                status="FAILED_PRECONDITION",
            )
        body = normalized(req.raw)
        storage = body.get("source", {}).get("storageSource")
        if not body.get("steps"):
            raise ApiError(400, "invalid build: build must have at least one step")
        check_account(body)
        if storage:
            bucket = fake.state.get("buckets", {}).get(storage.get("bucket", ""))
            objects = fake.state.get("objects", {}).get(storage.get("bucket", ""), {})
            if bucket is None or storage.get("object") not in objects:
                raise ApiError(
                    400,
                    f"invalid build: could not resolve source: googleapi: Error 404: gs://{storage.get('bucket')}/"
                    f"{storage.get('object')} not found",
                )
            generation = storage.get("generation")
            if generation and str(generation) != objects[storage["object"]]["generation"]:
                raise ApiError(400, "invalid build: the source object's generation does not match")
        running = sum(1 for b in builds.values() if b["status"] not in TERMINAL)
        fake.state["most_builds_at_once"] = max(fake.state.get("most_builds_at_once", 0), running + 1)
        build_id = str(uuid.uuid4())
        prefix = f"projects/{project}/locations/{location}"
        build = {
            **body,
            "name": f"projects/{PROJECT_NUMBER}/locations/{location}/builds/{build_id}",
            "id": build_id,
            "projectId": project,
            "status": "QUEUED",
            "createTime": TIME,
            "timeout": body.get("timeout", "600s"),
            "queueTtl": body.get("queueTtl", "3600s"),
            "logsBucket": f"gs://{PROJECT_NUMBER}.cloudbuild-logs.googleusercontent.com",
            "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region={location}/{build_id}"
            f"?project={PROJECT_NUMBER}",
            "serviceAccount": body.get("serviceAccount")
            or f"projects/{project}/serviceAccounts/{PROJECT_NUMBER}-{DEFAULT_BUILD_ACCOUNT}",
            "options": {"logging": "LEGACY", **body.get("options", {})},
        }
        for step in build["steps"]:
            step["status"] = "QUEUED"
        builds[f"{project}/{build_id}"] = build
        op_name = (
            f"{prefix}/operations/{uuid.uuid4().hex}"
            if location != "global"
            else (f"operations/build/{project}/{uuid.uuid4().hex}")
        )
        op = {"name": op_name, "done": False, "metadata": {"@type": METADATA_TYPE, "build": build}}
        operations[op_name] = op
        outcome = failures.pop(0) if failures else None

        def started() -> None:
            if build["status"] == "QUEUED":
                build["status"] = "WORKING"
                build["startTime"] = TIME
                for step in build["steps"]:
                    step["status"] = "WORKING"

        def finished() -> None:
            if build["status"] in TERMINAL:
                return
            build["startTime"] = build.get("startTime", TIME)
            denied = None if outcome else permission_problem(build)
            problem = denied[1] if denied else source_problem(build)
            status, detail = outcome or (("FAILURE", problem) if problem else ("SUCCESS", ""))
            if status == "SUCCESS":
                images = []
                for image in build.get("images", []):
                    digest = "sha256:" + hashlib.sha256(f"{build_id}/{image}".encode()).hexdigest()
                    error = fake.registry_push(image, digest)
                    if error:
                        status, detail = "FAILURE", f"failed to push {image}: {error}"
                        break
                    images.append({"name": image, "digest": digest, "pushTiming": {}})
                if status == "SUCCESS":
                    build["results"] = {"images": images, "buildStepImages": ["sha256:" + "0" * 64]}
            build["status"] = status
            build["finishTime"] = TIME
            for step in build["steps"]:
                step["status"] = status
            if status != "SUCCESS":
                build["statusDetail"] = detail or {
                    "FAILURE": 'Build step failure: build step 0 "gcr.io/cloud-builders/docker" failed: '
                    "step exited with non-zero status: 1",
                    "TIMEOUT": "Build timeout after " + build["timeout"],
                    "INTERNAL_ERROR": "Internal error: the build could not be completed.",
                }.get(status, status)
                build["failureInfo"] = {
                    "type": denied[0] if denied else FAILURE_TYPES.get(status, "FAILURE_TYPE_UNSPECIFIED"),
                    "detail": build["statusDetail"],
                }
                op["error"] = {"code": 2, "message": f"Build failed; check build logs for details ({status})"}
            else:
                op["response"] = {"@type": BUILD_TYPE, **copy.deepcopy(build)}
            op["metadata"] = {"@type": METADATA_TYPE, "build": copy.deepcopy(build)}
            op["done"] = True

        fake.after("cloudbuild.start", started)
        if fake.cloudbuild_reads_to_finish is None:
            fake.after("cloudbuild.build", finished)
        else:
            key = f"{project}/{build_id}"
            reads_left[key] = fake.cloudbuild_reads_to_finish
            finishers[key] = finished
        fake.tick()
        return {**op, "metadata": {"@type": METADATA_TYPE, "build": copy.deepcopy(build)}}

    def location_of(build: dict) -> str:
        return build["name"].split("/locations/", 1)[1].split("/", 1)[0]

    def found(req: Request) -> dict:
        key = f"{req.params['project']}/{req.params['build']}"
        if key not in builds or location_of(builds[key]) != req.params.get("location", "global"):
            raise not_found(f"Build {req.params['build']}")
        return builds[key]

    @fake.route("cloudbuild", "POST", "/v1/projects/{project}/locations/{location}/builds")
    def create_regional(req: Request):
        return create(req, req.params["location"])

    @fake.route("cloudbuild", "POST", "/v1/projects/{project}/builds")
    def create_global(req: Request):
        return create(req, "global")

    @fake.route("cloudbuild", "GET", "/v1/projects/{project}/locations/{location}/builds/{build}")
    @fake.route("cloudbuild", "GET", "/v1/projects/{project}/builds/{build}")
    def get(req: Request):
        build = found(req)
        key = f"{req.params['project']}/{req.params['build']}"
        if key in reads_left:
            reads_left[key] -= 1
            if reads_left[key] <= 0:
                del reads_left[key]
                finishers.pop(key)()
        return build

    @fake.route("cloudbuild", "GET", "/v1/projects/{project}/locations/{location}/builds")
    @fake.route("cloudbuild", "GET", "/v1/projects/{project}/builds")
    def list_builds(req: Request):
        wanted = matcher(req.query.get("filter", ""))
        location = req.params.get("location", "global")
        found = [
            b
            for b in builds.values()
            if b["projectId"] == req.params["project"] and location_of(b) == location and wanted(b)
        ]
        return {"builds": sorted(found, key=lambda b: b["createTime"], reverse=True)}

    def matcher(text: str):
        """Cloud Build list filters, simply: `field="value"` terms; terms on one field are alternatives (OR),
        terms on different fields must all hold (AND). Fields: status, images, tags, id."""
        terms: dict[str, set[str]] = {}
        for field, value in re.findall(r'(\w+)\s*=\s*"([^"]*)"', text):
            if field not in ("status", "images", "tags", "id"):
                raise ApiError(400, f"invalid filter: unknown field {field}")
            terms.setdefault(field, set()).add(value)

        def matches(build: dict) -> bool:
            for field, values in terms.items():
                have = build.get(field, [])
                have = set(have) if isinstance(have, list) else {have}
                if not have & values:
                    return False
            return True

        return matches

    @fake.route("cloudbuild", "POST", "/v1/projects/{project}/locations/{location}/builds/{build}:cancel")
    @fake.route("cloudbuild", "POST", "/v1/projects/{project}/builds/{build}:cancel")
    def cancel(req: Request):
        build = found(req)
        if build["status"] not in TERMINAL:
            build["status"] = "CANCELLED"
            build["finishTime"] = TIME
        return build

    route_regional_operations(fake, "cloudbuild", "v1", operations)

    @fake.route("cloudbuild", "GET", "/v1/operations/{name=**}")
    def get_global_operation(req: Request):
        return operation_named(operations, "operations/" + req.params["name"])
