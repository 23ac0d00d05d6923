"""Secret Manager v1: secrets, versions (add, access, list, enable/disable/destroy) and IAM policies.

Options:
- `fake.secret_latest_stale_reads` (default 0): after an addVersion, that many reads of `versions/latest` of
  the secret still answer the version before (404 when there was none). `latest` is eventually consistent, a
  version read by its number is not (https://cloud.google.com/secret-manager/docs/reference/consistency).
- `fake.secret_list_stale_reads` (default 0): after an addVersion, that many lists of the secret's versions
  still leave the new version out. Only adding a version and then reading it by its number is strongly
  consistent; every other operation, listing included, is eventually consistent
  (https://cloud.google.com/secret-manager/docs/reference/consistency).
- enable, disable or destroy of a destroyed version answers 400 FAILED_PRECONDITION: destroyed is final
  (hashicorp/terraform-provider-google#12504, GoogleCloudPlatform/k8s-config-connector#3825).
- `fake.secret_allowed_locations` (default None: any): an organization policy constraints/gcp.resourceLocations
  allowing only these locations; automatic replication is `global` and refused unless allowed
  (https://cloud.google.com/secret-manager/docs/choosing-replication; the error as in
  firebase/firebase-tools#6454).
- `PATCH` of a secret updates the fields named in `updateMask` (labels, annotations) and refuses a stale etag,
  as projects.secrets.patch does (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets/patch;
  annotations: https://cloud.google.com/secret-manager/docs/creating-and-managing-annotations).
"""

from __future__ import annotations

import base64

import google_crc32c

from tests.fake_gcp.server import PROJECT_NUMBER, ApiError, FakeGoogle, Request, already_exists, not_found

SECRET = "/v1/projects/{project}/secrets/{secret}"
TIME = "2026-11-26T00:00:00Z"
_last_time = [0.0]


def now() -> str:
    """The current time as Google writes it, strictly increasing (two versions never share a time)."""
    import datetime
    import time

    stamp = max(time.time(), _last_time[0] + 1e-6)
    _last_time[0] = stamp
    moment = datetime.datetime.fromtimestamp(stamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register(fake: FakeGoogle) -> None:
    secrets: dict[str, dict] = fake.state.setdefault("secrets", {})
    versions: dict[str, list[dict]] = fake.state.setdefault("secret_versions", {})
    fake.secret_latest_stale_reads = 0
    stale: dict[str, int] = {}  # secret name -> reads of `latest` that still answer the version before
    fake.secret_list_stale_reads = 0
    stale_lists: dict[str, int] = {}  # secret name -> lists that still leave out the newest version
    fake.secret_allowed_locations = None

    def settle() -> None:
        """Test switch: time has passed, every `latest` and every list answers the newest version."""
        with fake.lock:
            stale.clear()
            stale_lists.clear()

    fake.secret_latest_settle = settle

    def check_locations(replication: dict) -> None:
        allowed = fake.secret_allowed_locations
        if allowed is None:
            return
        replicas = (replication.get("userManaged") or replication.get("user_managed") or {}).get("replicas")
        locations = [r.get("location", "") for r in replicas] if replicas else ["global"]
        refused = [location for location in locations if location not in allowed]
        if refused:
            message = (
                f"Constraint constraints/gcp.resourceLocations violated for [orgpolicy:projects/{PROJECT_NUMBER}] "
                f"attempting to create a secret in [{', '.join(refused)}]. For more information, see "
                "https://cloud.google.com/resource-manager/docs/organization-policy/defining-locations."
            )
            raise ApiError(
                400,
                message,
                status="FAILED_PRECONDITION",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [
                            {
                                "type": "constraints/gcp.resourceLocations",
                                "subject": f"orgpolicy:projects/{PROJECT_NUMBER}",
                                "description": message,
                            }
                        ],
                    }
                ],
            )

    def key(req: Request) -> str:
        return f"projects/{req.params['project']}/secrets/{req.params['secret']}"

    def existing(req: Request) -> str:
        name = key(req)
        if name not in secrets:
            raise not_found(f"Secret [{name}]")
        return name

    def public(version: dict) -> dict:
        return {k: v for k, v in version.items() if k != "data"}

    def version_of(req: Request) -> dict:
        name = existing(req)
        wanted = req.params["version"]
        live = [v for v in versions[name] if v["state"] != "DESTROYED"] if wanted == "latest" else versions[name]
        if wanted == "latest":
            with fake.lock:
                if stale.get(name, 0) > 0:
                    stale[name] -= 1
                    live = live[:-1]
        found = live[-1:] if wanted == "latest" else [v for v in live if v["name"].endswith(f"/{wanted}")]
        if not found:
            raise not_found(f"Secret Version [{name}/versions/{wanted}]")
        return found[0]

    @fake.route("secretmanager", "POST", "/v1/projects/{project}/secrets")
    def create(req: Request):
        name = f"projects/{req.params['project']}/secrets/{req.query.get('secretId', '')}"
        if not req.query.get("secretId"):
            raise ApiError(400, "secretId is required.")
        if name in secrets:
            raise already_exists(f"Secret [{name}]")
        body = req.json
        check_locations(body.get("replication", {}))
        secrets[name] = {
            "name": name,
            "createTime": TIME,
            "replication": body.get("replication", {}),
            "labels": body.get("labels", {}),
            "etag": '"1"',
        }
        if body.get("annotations"):
            secrets[name]["annotations"] = body["annotations"]
        versions[name] = []
        return secrets[name]

    @fake.route("secretmanager", "GET", SECRET)
    def get(req: Request):
        return secrets[existing(req)]

    @fake.route("secretmanager", "PATCH", SECRET)
    def patch(req: Request):
        # projects.secrets.patch: only the fields named in updateMask change; labels are replaced as a whole
        # (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets/patch).
        secret = secrets[existing(req)]
        paths = [p for p in req.query.get("updateMask", "").split(",") if p]
        if not paths:
            raise ApiError(400, "update_mask is required.")
        if req.json.get("etag") and req.json["etag"] != secret["etag"]:
            raise ApiError(409, "The etag does not match the current etag of the secret.", status="ABORTED")
        for path in paths:
            if path not in ("labels", "annotations", "topics", "expire_time", "ttl", "rotation", "version_aliases"):
                raise ApiError(400, f"The update_mask path {path} is not supported.")
            if path == "labels":
                secret["labels"] = dict(req.json.get("labels", {}))
            if path == "annotations":
                if req.json.get("annotations"):
                    secret["annotations"] = dict(req.json["annotations"])
                else:
                    secret.pop("annotations", None)
        secret["etag"] = f'"{int(secret["etag"].strip(chr(34))) + 1}"'
        return secret

    @fake.route("secretmanager", "DELETE", SECRET)
    def delete(req: Request):
        name = existing(req)
        del secrets[name]
        del versions[name]
        fake.policies.pop(name, None)
        return {}

    @fake.route("secretmanager", "POST", SECRET + ":addVersion")
    def add_version(req: Request):
        name = existing(req)
        payload = req.json.get("payload", {})
        data = base64.b64decode(payload.get("data", ""))
        if not data:
            # gcloud and the API refuse an empty payload: "Secret Payload cannot be empty."
            raise ApiError(400, "Secret Payload cannot be empty.", status="INVALID_ARGUMENT")
        sent_crc = payload.get("dataCrc32c", payload.get("data_crc32c"))
        if sent_crc is not None and int(sent_crc) != google_crc32c.value(data):
            # https://cloud.google.com/secret-manager/docs/data-integrity: the server verifies a checksum sent
            # with the data and refuses the version when it does not match.
            raise ApiError(400, "Checksum mismatch: the payload was corrupted in transit.", status="INVALID_ARGUMENT")
        version = {
            "name": f"{name}/versions/{len(versions[name]) + 1}",
            # Google's creation time, to the microsecond: a secret made again has a version 1 of another time.
            "createTime": now(),
            "state": "ENABLED",
            "data": data,
            "clientSpecifiedPayloadChecksum": sent_crc is not None,
        }
        versions[name].append(version)
        stale[name] = fake.secret_latest_stale_reads
        stale_lists[name] = fake.secret_list_stale_reads
        return public(version)

    @fake.route("secretmanager", "GET", SECRET + "/versions")
    def list_versions(req: Request):
        name = existing(req)
        listed = versions[name]
        with fake.lock:
            if stale_lists.get(name, 0) > 0:
                stale_lists[name] -= 1
                listed = listed[:-1]
        return {"versions": [public(v) for v in reversed(listed)], "totalSize": len(listed)}

    @fake.route("secretmanager", "GET", SECRET + "/versions/{version}:access")
    def access(req: Request):
        version = version_of(req)
        if version["state"] != "ENABLED":
            raise ApiError(400, f"{version['name']} is in {version['state']} state.", status="FAILED_PRECONDITION")
        crc = google_crc32c.value(version["data"])
        return {
            "name": version["name"],
            "payload": {"data": base64.b64encode(version["data"]).decode(), "dataCrc32c": str(crc)},
        }

    @fake.route("secretmanager", "GET", SECRET + "/versions/{version}")
    def get_version(req: Request):
        return public(version_of(req))

    def set_state(state: str):
        def handler(req: Request):
            version = version_of(req)
            if version["state"] == "DESTROYED":
                raise ApiError(400, f"{version['name']} is destroyed.", status="FAILED_PRECONDITION")
            version["state"] = state
            if state == "DESTROYED":
                version["data"] = b""
            return public(version)

        return handler

    for verb, state in (("enable", "ENABLED"), ("disable", "DISABLED"), ("destroy", "DESTROYED")):
        fake.route("secretmanager", "POST", SECRET + f"/versions/{{version}}:{verb}")(set_state(state))

    @fake.route("secretmanager", "GET", SECRET + ":getIamPolicy")
    def get_iam_policy(req: Request):
        return fake.get_policy(existing(req))

    @fake.route("secretmanager", "POST", SECRET + ":setIamPolicy")
    def set_iam_policy(req: Request):
        return fake.set_policy(existing(req), req.json.get("policy", {}))

    def value(secret_id: str, project: str = "demo-project") -> str | None:
        """Test helper: the latest enabled value of a secret."""
        live = [v for v in versions.get(f"projects/{project}/secrets/{secret_id}", []) if v["state"] == "ENABLED"]
        return live[-1]["data"].decode() if live else None

    fake.secret_value = value
