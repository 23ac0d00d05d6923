"""Cloud Run Admin API v2: services (get, list, create, patch, delete), their long-running operations and IAM
policies.

A create or patch makes a new revision: the service is `reconciling` (terminal condition
CONDITION_RECONCILING) until the operation completes after the `run.deploy` latency (`run.delete` for a
delete). Then the revision is ready, or failed when a test asked for it with `fake.run_fail_next_revision()`:
the operation ends in error with Google's message and the terminal condition is CONDITION_FAILED, as when a
container does not start. With `fake.run_pulls_images` set (off by default: tests that put a service in place
without building its image), a revision whose Artifact Registry image the registry no longer holds (deleted by
hand, or by a cleanup policy) fails the same way with "Image '...' not found." (as Cloud Run reports an image it cannot
pull: https://github.com/PrefectHQ/prefect/pull/21712; the jobs' `missing_images`).
`fake.run_refuse_invoker_iam_disabled` makes `invokerIamDisabled: true` refused as
an organization policy (constraints/run.managed.requireInvokerIam) does. With `fake.grant_propagation` set
(server.py), a revision whose service account cannot read a referenced secret yet is refused with 400
"Permission denied on secret ... for Revision service account ..." (grants take minutes to apply:
https://cloud.google.com/iam/docs/access-change-propagation).
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid

from tests.fake_gcp.server import (
    PROJECT_NUMBER,
    ApiError,
    FakeGoogle,
    Request,
    already_exists,
    not_found,
    parse_message,
)

SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"
SERVICES = "/v2/projects/{project}/locations/{location}/services"
SERVICE = SERVICES + "/{service}"
TIME = "2026-11-26T00:00:00.000000Z"
# Output-only fields: Google ignores them in requests. Those of every Cloud Run v2 resource (services, jobs), then
# the service's own.
RESOURCE_OUTPUT_ONLY = frozenset({
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "reconciling",
    "satisfiesPzs",
})
OUTPUT_ONLY = RESOURCE_OUTPUT_ONLY | {
    "latestReadyRevision",
    "latestCreatedRevision",
    "trafficStatuses",
    "uri",
    "urls",
}
REGION_CODES = {
    "europe-west1": "ew",
    "europe-west2": "nw",
    "europe-west3": "ey",
    "europe-west4": "ez",
    "us-central1": "uc",
    "us-east1": "ue",
    "us-west1": "uw",
    "asia-northeast1": "an",
}
START_FAILURE = (
    "Revision '{revision}' is not ready and cannot serve traffic. The user-provided container failed to start "
    "and listen on the port defined provided by the PORT=8080 environment variable within the allocated "
    "timeout. This can happen when the container port is misconfigured or if the timeout is too short."
)


def validate_containers(containers: list[dict], field_path: str) -> None:
    """Google's check of a service's or a job's containers: an image, and an env var's value given one way only."""
    if not containers or not containers[0].get("image"):
        raise ApiError(400, f"{field_path}: at least one container with an image is required.")
    for item in containers[0].get("env", []):
        if "value" in item and "valueSource" in item:
            raise ApiError(400, f"env {item['name']}: value and valueSource are mutually exclusive.")


def service_urls(project: str, location: str, service: str) -> list[str]:
    digest = hashlib.sha256(f"{project}/{service}".encode()).hexdigest()
    code = REGION_CODES.get(location, "uc")
    return [
        f"https://{service}-{PROJECT_NUMBER}.{location}.run.app",
        f"https://{service}-{digest[:10]}-{code}.a.run.app",
    ]


def normalized(raw: bytes) -> dict:
    """The request's Service as Google reads it: enums sent as integers (GAPIC REST does) become names,
    an unknown field is a 400 as on the real API."""
    from google.cloud import run_v2

    return parse_message(raw, run_v2.Service)


def register(fake: FakeGoogle) -> None:
    services: dict[str, dict] = fake.state.setdefault("run_services", {})
    operations: dict[str, dict] = fake.state.setdefault("run_operations", {})
    failures: list[str] = []  # messages for the next revisions that fail to start
    fake.run_refuse_invoker_iam_disabled = False
    fake.run_pulls_images = False

    def fail_next_revision(message: str | None = None) -> None:
        """Test switch: the next revision's container fails to start."""
        failures.append(message or START_FAILURE)

    fake.run_fail_next_revision = fail_next_revision

    def key(req: Request) -> str:
        p = req.params
        return f"projects/{p['project']}/locations/{p['location']}/services/{p['service']}"

    def existing(req: Request) -> dict:
        name = key(req)
        if name not in services:
            raise not_found(
                f"Resource '{req.params['service']}' of kind 'SERVICE' in region '{req.params['location']}'"
            )
        return services[name]

    def validate(body: dict, req: Request) -> None:
        template = body.get("template") or {}
        containers = template.get("containers") or []
        validate_containers(containers, "template.containers")
        secrets = fake.state.get("secrets", {})
        for i, item in enumerate(containers[0].get("env", [])):
            ref = (item.get("valueSource") or {}).get("secretKeyRef")
            if ref and f"projects/{req.params['project']}/secrets/{ref['secret']}" not in secrets:
                raise ApiError(
                    400,
                    f"spec.template.spec.containers[0].env[{i}].value_from.secret_key_ref.name: Secret "
                    f"projects/{PROJECT_NUMBER}/secrets/{ref['secret']}/versions/{ref.get('version', 'latest')} "
                    "was not found",
                )
        if fake.grant_propagation:
            check_secret_access(template, containers[0], req)
        scaling = template.get("scaling", {})
        if int(scaling.get("minInstanceCount", 0)) > int(scaling.get("maxInstanceCount", 100)):
            raise ApiError(400, "template.scaling: min instance count must not exceed max instance count.")
        connector = (template.get("vpcAccess") or {}).get("connector")
        if connector and not connector.startswith(f"projects/{req.params['project']}/locations/"):
            raise ApiError(400, f"template.vpc_access.connector: '{connector}' is not a full connector name.")
        validate_network_interfaces(template.get("vpcAccess") or {}, req)
        if body.get("invokerIamDisabled") and fake.run_refuse_invoker_iam_disabled:
            raise ApiError(
                400,
                'Operation denied by org policy: ["constraints/run.managed.requireInvokerIam: Cloud Run '
                'services must require IAM invoker checks."]',
                status="FAILED_PRECONDITION",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [
                            {
                                "type": "constraints/run.managed.requireInvokerIam",
                                "subject": f"projects/{PROJECT_NUMBER}",
                                "description": "Cloud Run services must require IAM invoker checks.",
                            }
                        ],
                    }
                ],
            )

    def check_secret_access(template: dict, container: dict, req: Request) -> None:
        """Cloud Run refuses a revision whose service account cannot read a secret it references yet."""
        account = template.get("serviceAccount") or f"{PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
        refused = []  # every secret is checked at each revision; the first refused one is named
        for item in container.get("env", []):
            ref = (item.get("valueSource") or {}).get("secretKeyRef")
            if not ref:
                continue
            key = f"projects/{req.params['project']}/secrets/{ref['secret']}"
            if not fake.grant_applied(key, "roles/secretmanager.secretAccessor", f"serviceAccount:{account}"):
                refused.append(ref)
        if refused:
            ref = refused[0]
            raise ApiError(
                400,
                f"spec.template.spec.containers[0].env.value_from.secret_key_ref.name: Permission denied on "
                f"secret: projects/{PROJECT_NUMBER}/secrets/{ref['secret']}/versions/"
                f"{ref.get('version', 'latest')} for Revision service account {account}. The service account "
                "used must be granted the 'Secret Manager Secret Accessor' role "
                "(roles/secretmanager.secretAccessor) at the secret, project or higher level.",
            )

    def validate_network_interfaces(vpc: dict, req: Request) -> None:
        """Direct VPC egress (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc): not together with a
        connector; each interface names a network or a subnetwork (a missing subnetwork is the one named like
        the network), and the subnetwork must exist in the service's region, in that network."""
        interfaces = vpc.get("networkInterfaces") or []
        if interfaces and vpc.get("connector"):
            raise ApiError(400, "template.vpc_access: connector and network_interfaces cannot both be set.")
        region = req.params["location"]
        for i, interface in enumerate(interfaces):
            network = (interface.get("network") or "").rsplit("/", 1)[-1]
            subnetwork = (interface.get("subnetwork") or "").rsplit("/", 1)[-1] or network
            if not subnetwork:
                raise ApiError(400, f"template.vpc_access.network_interfaces[{i}]: set a network or a subnetwork.")
            subnet = fake.state.get("compute_subnetworks", {}).get(f"{region}/{subnetwork}")
            if subnet is None:
                raise ApiError(
                    400,
                    f"template.vpc_access.network_interfaces[{i}].subnetwork: subnetwork '{subnetwork}' was not "
                    f"found in region {region}.",
                )
            if network and subnet["network"].rsplit("/", 1)[-1] != network:
                raise ApiError(
                    400,
                    f"template.vpc_access.network_interfaces[{i}]: subnetwork '{subnetwork}' does not belong to "
                    f"network '{network}'.",
                )

    def revision_name(service: dict) -> str:
        short = service["name"].rsplit("/", 1)[-1]
        return f"{short}-{service['generation']:05d}-{uuid.uuid4().hex[:3]}"

    def condition(state: str, message: str = "", reason: str = "") -> dict:
        out = {"type": "Ready", "state": state, "lastTransitionTime": TIME}
        if message:
            out["message"] = message
        if reason:
            out["reason"] = reason
        return out

    def start_operation(service: dict, kind: str, finish) -> dict:
        name = f"{service['name'].split('/services/')[0]}/operations/{uuid.uuid4()}"
        op = {"name": name, "done": False, "metadata": {"@type": SERVICE_TYPE, **public(service)}}
        operations[name] = op

        def complete() -> None:
            error = finish()
            op["done"] = True
            if error:
                op["error"] = {"code": 9, "message": error}
            elif service["name"] in services:
                op["response"] = {"@type": SERVICE_TYPE, **public(service)}
            else:
                op["response"] = {"@type": SERVICE_TYPE, **public(service)}

        fake.after(kind, complete)
        fake.tick()
        return dict(op)

    def roll_out(service: dict) -> dict:
        """A new revision of `service`; ready (or failed) when the operation completes."""
        revision = revision_name(service)
        service["latestCreatedRevision"] = f"{service['name'].split('/services/')[0]}/revisions/{revision}"
        service["reconciling"] = True
        service["terminalCondition"] = condition("CONDITION_RECONCILING")
        service["etag"] = f'"{uuid.uuid4().hex[:16]}"'
        failure = failures.pop(0).format(revision=revision) if failures else None
        image = ((service.get("template") or {}).get("containers") or [{}])[0].get("image", "")
        if failure is None and fake.run_pulls_images and fake.registry_holds(image) is False:
            failure = f"Image '{image}' not found."
        generation = service["generation"]

        def finish() -> str | None:
            service["reconciling"] = False
            service["observedGeneration"] = str(generation)
            if failure:
                service["terminalCondition"] = condition("CONDITION_FAILED", failure, "REVISION_FAILED")
                return failure
            service["terminalCondition"] = condition("CONDITION_SUCCEEDED")
            service["latestReadyRevision"] = service["latestCreatedRevision"]
            service["trafficStatuses"] = [
                {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100, "revision": revision}
            ]
            return None

        return start_operation(service, "run.deploy", finish)

    def public(service: dict) -> dict:
        return copy.deepcopy({k: v for k, v in service.items() if not k.startswith("_")})

    @fake.route("run", "POST", SERVICES)
    def create(req: Request):
        service_id = req.query.get("serviceId", "")
        if not service_id:
            raise ApiError(400, "serviceId is required.")
        req.params["service"] = service_id
        name = key(req)
        if name in services:
            raise already_exists(f"Resource '{service_id}'")
        body = {k: v for k, v in normalized(req.raw).items() if k not in OUTPUT_ONLY}
        validate(body, req)
        if req.query.get("validateOnly") == "true":
            return start_operation({"name": name, **body, "generation": "0"}, "run.validate", lambda: None)
        service = {
            **body,
            "name": name,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "createTime": TIME,
            "updateTime": TIME,
            "creator": "user@example.com",
            "lastModifier": "user@example.com",
            "launchStage": body.get("launchStage", "GA"),
            "ingress": body.get("ingress", "INGRESS_TRAFFIC_ALL"),
            "traffic": body.get("traffic") or [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
            "uri": service_urls(req.params["project"], req.params["location"], service_id)[1],
            "urls": service_urls(req.params["project"], req.params["location"], service_id),
        }
        services[name] = service
        return roll_out(service)

    @fake.route("run", "GET", SERVICE)
    def get(req: Request):
        return {**public(existing(req)), "generation": str(existing(req)["generation"])}

    @fake.route("run", "GET", SERVICES)
    def list_services(req: Request):
        prefix = f"projects/{req.params['project']}/locations/{req.params['location']}/services/"
        return {"services": [public(s) for n, s in services.items() if n.startswith(prefix)]}

    @fake.route("run", "PATCH", SERVICE)
    def patch(req: Request):
        name = key(req)
        body = {k: v for k, v in normalized(req.raw).items() if k not in OUTPUT_ONLY}
        if name not in services:
            if req.query.get("allowMissing") == "true":
                return create(req)
            existing(req)
        service = services[name]
        if body.get("etag") and body["etag"] != service["etag"]:
            raise ApiError(409, "Etag mismatch: the service was changed concurrently.", status="ABORTED")
        if service.get("reconciling"):
            raise ApiError(409, f"Resource '{name}' is being reconciled; retry later.", status="ABORTED")
        validate(body, req)
        if req.query.get("validateOnly") == "true":
            return start_operation(service, "run.validate", lambda: None)
        mask = [m for m in req.query.get("updateMask", "").split(",") if m]
        if mask:
            for field in mask:
                if field in body:
                    service[field] = body[field]
                else:
                    service.pop(field, None)
        else:
            for field in [k for k in service if k not in OUTPUT_ONLY and k not in ("name", "etag", "launchStage")]:
                if field not in body and field not in ("ingress", "traffic"):
                    service.pop(field)
            service.update({k: v for k, v in body.items() if k not in ("name", "etag")})
        service["generation"] += 1
        service["updateTime"] = TIME
        return roll_out(service)

    @fake.route("run", "DELETE", SERVICE)
    def delete(req: Request):
        service = existing(req)
        service["reconciling"] = True

        def finish() -> None:
            services.pop(service["name"], None)
            fake.policies.pop(service["name"], None)

        return start_operation(service, "run.delete", finish)

    @fake.route("run", "GET", "/v2/projects/{project}/locations/{location}/operations/{operation}")
    def get_operation(req: Request):
        name = f"projects/{req.params['project']}/locations/{req.params['location']}/operations/"
        name += req.params["operation"]
        if name not in operations:
            raise not_found(f"Operation {name}")
        return dict(operations[name])

    @fake.route("run", "GET", SERVICE + ":getIamPolicy")
    def get_iam_policy(req: Request):
        return fake.get_policy(existing(req)["name"])

    @fake.route("run", "POST", SERVICE + ":setIamPolicy")
    def set_iam_policy(req: Request):
        service = existing(req)
        policy = req.json.get("policy", {})
        members = [m for b in policy.get("bindings", []) for m in b.get("members", [])]
        if "allUsers" in members and fake.run_refuse_all_users:
            raise ApiError(
                400,
                "One or more users named in the policy do not belong to a permitted customer, perhaps due to an "
                "organization policy.",
                status="FAILED_PRECONDITION",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [
                            {
                                "type": "constraints/iam.allowedPolicyMemberDomains",
                                "subject": f"projects/{PROJECT_NUMBER}",
                                "description": "User allUsers is not in permitted organization.",
                            }
                        ],
                    }
                ],
            )
        return fake.set_policy(service["name"], policy)

    fake.run_refuse_all_users = False

    def service_state(name: str, project: str = "demo-project", location: str = "europe-west1") -> dict | None:
        """Test helper: the stored service (REST JSON), or None."""
        found = services.get(f"projects/{project}/locations/{location}/services/{name}")
        return json.loads(json.dumps(public(found))) if found else None

    fake.run_service = service_state
