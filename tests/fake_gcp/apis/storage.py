"""Cloud Storage JSON API v1: buckets (insert, get, patch, delete), bucket IAM, objects (multipart, media and
resumable uploads, metadata, media download, list, delete).

Paths as `google-cloud-storage` sends them under the endpoint rule: `/storage/storage/v1/b...`,
`/storage/upload/storage/v1/b/B/o?uploadType=...`, `/storage/download/storage/v1/b/B/o/NAME?alt=media`.

Test helpers on the fake:
- `fake.foreign_buckets`: names owned by another project (insert answers 409 "not available", get 403).
- `fake.bucket(name)`: the stored bucket resource, or None; `fake.objects(bucket)`: {name: bytes}.
- `fake.bucket_of_another_project(name)`: a bucket another project made first (bucket names are global) and lets
  anyone read and write, as a squatter of `PROJECT_cloudbuild` would; its `projectNumber` is not this project's
  (https://cloud.google.com/storage/docs/json_api/v1/buckets#resource).
Bucket and object calls answer synchronously, as Google does; `fake.latency["storage.bucket_insert"]` and
`fake.latency["storage.upload"]` make those requests take that long.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
from urllib.parse import quote

import google_crc32c

from tests.fake_gcp.server import PROJECT_NUMBER, ApiError, FakeGoogle, Request

TIME = "2026-11-26T00:00:00.000Z"
OTHER_PROJECT_NUMBER = "999999999999"
BUCKET = "/storage/v1/b/{bucket}"
OBJECT = "/storage/v1/b/{bucket}/o/{object=**}"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[A-Z]+-[A-Z]+[0-9]+$")
_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")


def _header(req: Request, name: str) -> str | None:
    return next((v for k, v in req.headers.items() if k.lower() == name.lower()), None)


def _crc32c(data: bytes) -> str:
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def answered_version(req: Request, policy: dict) -> int:
    """Google answers version 3 only when asked for it and a binding has a condition; otherwise version 1."""
    requested = int(req.query.get("optionsRequestedPolicyVersion") or 1)
    conditional = any(b.get("condition") for b in policy.get("bindings", []))
    return 3 if requested >= 3 and conditional else 1


def _merge(target: dict, patch: dict) -> None:
    """JSON merge patch: nested dicts merge, null removes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def register(fake: FakeGoogle) -> None:
    buckets: dict[str, dict] = fake.state.setdefault("buckets", {})
    objects: dict[str, dict[str, dict]] = fake.state.setdefault("objects", {})
    uploads: dict[str, dict] = fake.state.setdefault("uploads", {})
    fake.foreign_buckets = set()

    def delay(kind: str) -> None:
        seconds = fake.latency.get(kind, 0.0)
        if seconds:
            time.sleep(seconds)

    def policy_key(name: str) -> str:
        return f"projects/_/buckets/{name}"

    def forbidden(name: str, permission: str) -> ApiError:
        return ApiError(
            403,
            f"anonymous caller does not have {permission} access to the Google Cloud Storage bucket. "
            f"Permission '{permission}' denied on resource (or it may not exist).",
            legacy_reason="forbidden",
        )

    def existing(name: str, permission: str = "storage.buckets.get") -> dict:
        if name in fake.foreign_buckets:
            raise forbidden(name, permission)
        if name not in buckets:
            raise ApiError(404, "The specified bucket does not exist.", legacy_reason="notFound")
        return buckets[name]

    def check_metageneration(req: Request, resource: dict) -> None:
        wanted = req.query.get("ifMetagenerationMatch")
        if wanted is not None and wanted != resource["metageneration"]:
            raise ApiError(
                412, "At least one of the pre-conditions you specified did not hold.", legacy_reason="conditionNotMet"
            )

    def soft_delete(policy: dict) -> dict:
        """0 (off) or 7 to 90 days, in seconds, as Cloud Storage accepts it."""
        seconds = int(policy.get("retentionDurationSeconds") or 0)
        if seconds != 0 and not 7 * 86400 <= seconds <= 90 * 86400:
            raise ApiError(
                400, "The soft delete retention duration must be 0 or between 7 and 90 days.", legacy_reason="invalid"
            )
        return {"retentionDurationSeconds": str(seconds), "effectiveTime": TIME}

    # -- buckets -----------------------------------------------------------------------------------------
    @fake.route("storage", "POST", "/storage/v1/b")
    def insert_bucket(req: Request):
        body = req.json
        name = body.get("name", "")
        if not req.query.get("project"):
            raise ApiError(400, "Required parameter: project", legacy_reason="required")
        if not _BUCKET_NAME.match(name) or ".." in name or "google" in name or name.startswith("goog"):
            raise ApiError(400, "Invalid bucket name: '" + name + "'", legacy_reason="invalid")
        delay("storage.bucket_insert")
        if name in fake.foreign_buckets:
            raise ApiError(
                409,
                "The requested bucket name is not available. The bucket namespace is shared by all users of the "
                "system. Please select a different name and try again.",
                legacy_reason="conflict",
            )
        if name in buckets:
            raise ApiError(
                409,
                "Your previous request to create the named bucket succeeded and you already own it.",
                legacy_reason="conflict",
            )
        location = str(body.get("location") or "US").upper()
        iam = body.get("iamConfiguration") or {}
        ubla = bool((iam.get("uniformBucketLevelAccess") or iam.get("bucketPolicyOnly") or {}).get("enabled"))
        access = {"enabled": ubla, **({"lockedTime": "2027-02-24T00:00:00.000Z"} if ubla else {})}
        pap = iam.get("publicAccessPrevention") or "inherited"
        if pap not in ("inherited", "enforced", "unspecified"):
            raise ApiError(400, f"Invalid value for publicAccessPrevention: {pap}", legacy_reason="invalid")
        bucket = {
            "kind": "storage#bucket",
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{name}",
            "id": name,
            "name": name,
            "projectNumber": PROJECT_NUMBER,
            "metageneration": "1",
            "location": location,
            "storageClass": body.get("storageClass") or "STANDARD",
            "etag": "CAE=",
            "timeCreated": TIME,
            "updated": TIME,
            "iamConfiguration": {
                "bucketPolicyOnly": dict(access),
                "uniformBucketLevelAccess": dict(access),
                "publicAccessPrevention": pap,
            },
            "locationType": "region" if _REGION.match(location) else "multi-region",
            "rpo": "DEFAULT",
        }
        # Every new bucket gets a soft delete policy, 7 days unless the request says otherwise
        # (https://cloud.google.com/storage/docs/soft-delete; JSON: softDeletePolicy.retentionDurationSeconds).
        bucket["softDeletePolicy"] = soft_delete(body.get("softDeletePolicy") or {"retentionDurationSeconds": "604800"})
        if body.get("labels"):
            bucket["labels"] = dict(body["labels"])
        if body.get("versioning"):
            bucket["versioning"] = body["versioning"]
        buckets[name] = bucket
        objects[name] = {}
        return bucket

    # buckets.list (https://cloud.google.com/storage/docs/json_api/v1/buckets/list): the project's buckets, the
    # `project` parameter required; "items" left out when there are none, as Google does.
    @fake.route("storage", "GET", "/storage/v1/b")
    def list_buckets(req: Request):
        if not req.query.get("project"):
            raise ApiError(400, "Required parameter: project", legacy_reason="required")
        items = [buckets[name] for name in sorted(buckets)]
        return {"kind": "storage#buckets", **({"items": items} if items else {})}

    @fake.route("storage", "GET", BUCKET)
    def get_bucket(req: Request):
        bucket = existing(req.params["bucket"])
        check_metageneration(req, bucket)
        return bucket

    @fake.route("storage", "PATCH", BUCKET)
    @fake.route("storage", "PUT", BUCKET)
    def patch_bucket(req: Request):
        bucket = existing(req.params["bucket"], "storage.buckets.update")
        check_metageneration(req, bucket)
        body = dict(req.json)
        for immutable in ("location", "locationType", "name", "id", "projectNumber"):
            if immutable in body and str(body[immutable]).upper() != str(bucket.get(immutable, "")).upper():
                raise ApiError(400, f"The bucket's {immutable} cannot be changed.", legacy_reason="invalid")
            body.pop(immutable, None)
        iam = body.pop("iamConfiguration", None) or {}
        if body.get("softDeletePolicy") is not None:
            bucket["softDeletePolicy"] = soft_delete(body["softDeletePolicy"])
        if req.method == "PUT":
            for key in ("labels", "versioning"):
                bucket.pop(key, None)
        _merge(bucket, {k: v for k, v in body.items() if k in ("labels", "versioning", "storageClass")})
        if "labels" in bucket and not bucket["labels"]:
            del bucket["labels"]
        config = bucket["iamConfiguration"]
        access = iam.get("uniformBucketLevelAccess") or iam.get("bucketPolicyOnly")
        if access is not None and "enabled" in access:
            enabled = bool(access["enabled"])
            state = {"enabled": enabled, **({"lockedTime": "2027-02-24T00:00:00.000Z"} if enabled else {})}
            config["uniformBucketLevelAccess"] = dict(state)
            config["bucketPolicyOnly"] = dict(state)
        if "publicAccessPrevention" in iam:
            pap = iam["publicAccessPrevention"] or "inherited"
            if pap not in ("inherited", "enforced", "unspecified"):
                raise ApiError(400, f"Invalid value for publicAccessPrevention: {pap}", legacy_reason="invalid")
            config["publicAccessPrevention"] = "inherited" if pap == "unspecified" else pap
        bucket["metageneration"] = str(int(bucket["metageneration"]) + 1)
        bucket["etag"] = base64.b64encode(f"meta-{bucket['metageneration']}".encode()).decode()
        return bucket

    @fake.route("storage", "DELETE", BUCKET)
    def delete_bucket(req: Request):
        name = req.params["bucket"]
        existing(name, "storage.buckets.delete")
        if objects.get(name):
            raise ApiError(409, "The bucket you tried to delete is not empty.", legacy_reason="conflict")
        del buckets[name]
        objects.pop(name, None)
        fake.policies.pop(policy_key(name), None)
        return 204, {}, b""

    @fake.route("storage", "GET", BUCKET + "/iam")
    def get_bucket_iam(req: Request):
        name = req.params["bucket"]
        existing(name, "storage.buckets.getIamPolicy")
        policy = fake.get_policy(policy_key(name))
        return {
            "kind": "storage#policy",
            "resourceId": policy_key(name),
            **policy,
            "version": answered_version(req, policy),
        }

    @fake.route("storage", "PUT", BUCKET + "/iam")
    def set_bucket_iam(req: Request):
        name = req.params["bucket"]
        bucket = existing(name, "storage.buckets.setIamPolicy")
        body = req.json
        members = {m for b in body.get("bindings", []) for m in b.get("members", [])}
        if bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced" and members & {
            "allUsers",
            "allAuthenticatedUsers",
        }:
            raise ApiError(
                412,
                "One or more users named in the policy do not belong to a permitted customer, perhaps due to an "
                "organization policy or public access prevention.",
                legacy_reason="conditionNotMet",
            )
        check_visible = getattr(fake, "iam_check_visible", None)  # a service account just created (iam.py)
        if check_visible:
            check_visible(members)
        stored = fake.set_policy(policy_key(name), body, conflict_status=412)
        conditional = any(b.get("condition") for b in stored.get("bindings", []))
        return {"kind": "storage#policy", "resourceId": policy_key(name), **stored, "version": 3 if conditional else 1}

    # -- objects -----------------------------------------------------------------------------------------
    def public(obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k != "data"}

    def store(req: Request, bucket_name: str, metadata: dict, data: bytes) -> dict:
        existing(bucket_name, "storage.objects.create")
        name = metadata.get("name") or req.query.get("name")
        if not name:
            raise ApiError(400, "Required parameter: name", legacy_reason="required")
        current = objects[bucket_name].get(name)
        wanted = req.query.get("ifGenerationMatch")
        if wanted is not None and wanted != (current["generation"] if current else "0"):
            raise ApiError(
                412, "At least one of the pre-conditions you specified did not hold.", legacy_reason="conditionNotMet"
            )
        for field in ("crc32c", "md5Hash"):
            expected = metadata.get(field)
            actual = _crc32c(data) if field == "crc32c" else _md5(data)
            if expected and expected != actual:
                raise ApiError(
                    400,
                    f'Provided {field} "{expected}" doesn\'t match calculated {field} "{actual}".',
                    legacy_reason="invalid",
                )
        delay("storage.upload")
        generation = str(int(time.time() * 1_000_000) + int(fake.next_id()))
        host = _header(req, "Host") or "storage.googleapis.com"
        quoted = quote(name, safe="")
        obj = {
            "kind": "storage#object",
            "id": f"{bucket_name}/{name}/{generation}",
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket_name}/o/{quoted}",
            "mediaLink": f"http://{host}/storage/download/storage/v1/b/{bucket_name}/o/{quoted}"
            f"?generation={generation}&alt=media",
            "name": name,
            "bucket": bucket_name,
            "generation": generation,
            "metageneration": "1",
            "contentType": metadata.get("contentType") or "application/octet-stream",
            "storageClass": "STANDARD",
            "size": str(len(data)),
            "md5Hash": _md5(data),
            "crc32c": _crc32c(data),
            "etag": base64.b64encode(generation.encode()).decode(),
            "timeCreated": TIME,
            "updated": TIME,
            "timeStorageClassUpdated": TIME,
            "data": data,
        }
        if metadata.get("metadata"):
            obj["metadata"] = dict(metadata["metadata"])
        objects[bucket_name][name] = obj
        return public(obj)

    def parse_multipart(req: Request) -> tuple[dict, bytes]:
        content_type = _header(req, "Content-Type") or ""
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        if not content_type.startswith("multipart/related") or not match:
            raise ApiError(400, "Multipart upload needs a multipart/related body.", legacy_reason="invalid")
        delimiter = b"--" + match.group(1).encode()
        parts = []
        for chunk in req.raw.split(delimiter)[1:]:
            if chunk.startswith(b"--"):
                break
            chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
            _head, _, content = chunk.partition(b"\r\n\r\n")
            parts.append(content[:-2] if content.endswith(b"\r\n") else content)
        if len(parts) != 2:
            raise ApiError(400, "Multipart upload needs a metadata part and a media part.", legacy_reason="invalid")
        return json.loads(parts[0] or b"{}"), parts[1]

    @fake.route("storage", "POST", "/upload/storage/v1/b/{bucket}/o")
    def upload(req: Request):
        bucket_name = req.params["bucket"]
        kind = req.query.get("uploadType")
        if kind == "multipart":
            metadata, data = parse_multipart(req)
            return store(req, bucket_name, metadata, data)
        if kind == "media":
            return store(req, bucket_name, {"contentType": _header(req, "Content-Type")}, req.raw)
        if kind == "resumable":
            existing(bucket_name, "storage.objects.create")
            metadata = req.json if req.raw else {}
            if not (metadata.get("name") or req.query.get("name")):
                raise ApiError(400, "Required parameter: name", legacy_reason="required")
            if not metadata.get("contentType") and _header(req, "X-Upload-Content-Type"):
                metadata["contentType"] = _header(req, "X-Upload-Content-Type")
            upload_id = f"upload-{fake.next_id()}"
            uploads[upload_id] = {"bucket": bucket_name, "metadata": metadata, "data": bytearray(), "query": req.query}
            host = _header(req, "Host") or "storage.googleapis.com"
            location = (
                f"http://{host}/storage/upload/storage/v1/b/{bucket_name}/o?uploadType=resumable&upload_id={upload_id}"
            )
            return 200, {"Location": location, "Content-Type": "application/json"}, b""
        raise ApiError(400, f"Invalid upload type: {kind}", legacy_reason="invalid")

    @fake.route("storage", "PUT", "/upload/storage/v1/b/{bucket}/o")
    def upload_chunk(req: Request):
        session = uploads.get(req.query.get("upload_id", ""))
        if session is None or session["bucket"] != req.params["bucket"]:
            raise ApiError(404, "No such upload session.", legacy_reason="notFound")
        match = _CONTENT_RANGE.match(_header(req, "Content-Range") or f"bytes */{len(req.raw)}")
        if match is None:
            raise ApiError(400, "Invalid Content-Range header.", legacy_reason="invalid")
        start, end, total = match.groups()
        data: bytearray = session["data"]
        if start is not None:
            if int(start) != len(data):
                raise ApiError(400, "Chunk does not start where the last one ended.", legacy_reason="invalid")
            data.extend(req.raw)
            if len(data) != int(end) + 1:
                raise ApiError(400, "Chunk length does not match its Content-Range.", legacy_reason="invalid")
        if total != "*" and len(data) == int(total):
            metadata = dict(session["metadata"])
            hashes = _header(req, "x-goog-hash") or ""
            for item in hashes.split(","):
                label, _, value = item.strip().partition("=")
                if label == "crc32c" and value:
                    metadata.setdefault("crc32c", value)
                elif label == "md5" and value:
                    metadata.setdefault("md5Hash", value)
            saved = Request(req.api, req.method, req.path, session["query"], req.headers, b"", req.params)
            result = store(saved, session["bucket"], metadata, bytes(data))
            del uploads[req.query["upload_id"]]
            return result
        headers = {"Content-Type": "text/plain"}
        if data:
            headers["Range"] = f"bytes=0-{len(data) - 1}"
        return 308, headers, b""

    def found(bucket_name: str, name: str, permission: str) -> dict:
        existing(bucket_name, permission)
        obj = objects[bucket_name].get(name)
        if obj is None:
            raise ApiError(404, f"No such object: {bucket_name}/{name}", legacy_reason="notFound")
        return obj

    def media(req: Request, obj: dict):
        data: bytes = obj["data"]
        headers = {
            "Content-Type": obj["contentType"],
            "x-goog-hash": f"crc32c={obj['crc32c']},md5={obj['md5Hash']}",
            "x-goog-generation": obj["generation"],
            "x-goog-stored-content-length": obj["size"],
        }
        wanted = re.match(r"^bytes=(\d+)-(\d*)$", _header(req, "Range") or "")
        if wanted and data:
            first = int(wanted.group(1))
            last = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return 206, headers, data[first : last + 1]
        return 200, headers, data

    @fake.route("storage", "GET", OBJECT)
    def get_object(req: Request):
        obj = found(req.params["bucket"], req.params["object"], "storage.objects.get")
        if req.query.get("alt") == "media":
            return media(req, obj)
        return public(obj)

    @fake.route("storage", "GET", "/download/storage/v1/b/{bucket}/o/{object=**}")
    def download(req: Request):
        return media(req, found(req.params["bucket"], req.params["object"], "storage.objects.get"))

    @fake.route("storage", "DELETE", OBJECT)
    def delete_object(req: Request):
        found(req.params["bucket"], req.params["object"], "storage.objects.delete")
        del objects[req.params["bucket"]][req.params["object"]]
        return 204, {}, b""

    @fake.route("storage", "GET", "/storage/v1/b/{bucket}/o")
    def list_objects(req: Request):
        bucket_name = req.params["bucket"]
        existing(bucket_name, "storage.objects.list")
        prefix = req.query.get("prefix", "")
        delimiter = req.query.get("delimiter", "")
        start = req.query.get("pageToken") or req.query.get("startOffset") or ""
        limit = int(req.query.get("maxResults") or 1000)
        items, prefixes = [], set()
        names = sorted(n for n in objects[bucket_name] if n.startswith(prefix) and n >= start)
        next_token = None
        for name in names:
            if len(items) >= limit:
                next_token = name
                break
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            items.append(public(objects[bucket_name][name]))
        page: dict = {"kind": "storage#objects"}
        if items:
            page["items"] = items
        if prefixes:
            page["prefixes"] = sorted(prefixes)
        if next_token:
            page["nextPageToken"] = next_token
        return page

    # -- helpers for tests -------------------------------------------------------------------------------
    def bucket(name: str) -> dict | None:
        return buckets.get(name)

    def bucket_objects(name: str) -> dict[str, bytes]:
        return {n: o["data"] for n, o in objects.get(name, {}).items()}

    def bucket_of_another_project(name: str, location: str = "EUROPE-WEST1") -> dict:
        bucket = {
            "kind": "storage#bucket",
            "id": name,
            "name": name,
            "projectNumber": OTHER_PROJECT_NUMBER,
            "metageneration": "1",
            "location": location,
            "storageClass": "STANDARD",
            "etag": "CAE=",
            "timeCreated": TIME,
            "updated": TIME,
            "iamConfiguration": {
                "bucketPolicyOnly": {"enabled": True},
                "uniformBucketLevelAccess": {"enabled": True},
                "publicAccessPrevention": "inherited",
            },
            "labels": {"managed-by": "mlflow-gcp"},  # labels prove nothing: anyone can set them
            "locationType": "region",
        }
        buckets[name] = bucket
        objects[name] = {}
        return bucket

    fake.bucket = bucket
    fake.bucket_of_another_project = bucket_of_another_project
    fake.objects = bucket_objects
