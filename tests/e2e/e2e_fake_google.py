"""One local HTTP server standing in for the Google endpoints the MLflow container talks to.

- Cloud Storage: the `gcp-storage-emulator` package (JSON API), extended here with the XML
  multipart-upload API and V4 signed URLs (accepted only with a signature issued by signBlob).
- The metadata server of Cloud Run (GCE_METADATA_HOST / GCE_METADATA_IP): the service account's
  access token and e-mail, as Application Default Credentials read them on Cloud Run.
- IAM Credentials `signBlob` under `$MLFLOW_GCP_API_ENDPOINT/iamcredentials/...`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.handlers import buckets, objects
from gcp_storage_emulator.storage import Storage

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
SIGN_BLOB_PATH = re.compile(r"^/iamcredentials/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):signBlob$")
OBJECT_PATH = re.compile(r"^/(?P<bucket>[-.\w]+)/(?P<name>.+)$")
METADATA_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
PROJECT_NUMBER = "123456789012"
SERVICE_ACCOUNT_ID = "104857600000000000001"  # the account's numeric unique id (`sub` of its ID tokens)


@dataclass
class FakeGoogleState:
    service_account_email: str
    project: str
    access_token: str = field(default_factory=lambda: "ya29.fake-" + secrets.token_urlsafe(16))
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    issued_signatures: set[str] = field(default_factory=set)
    sign_blob_calls: int = 0
    signed_requests: int = 0
    rejected_signed_requests: int = 0
    part_uploads: list[int] = field(default_factory=list)
    completed_multipart_uploads: list[str] = field(default_factory=list)
    uploads: dict[str, dict[int, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeGoogleHandler(emulator.RequestHandler):
    protocol_version = "HTTP/1.0"

    def __init__(self, state: FakeGoogleState, storage_lock: threading.Lock, *args, **kwargs):
        self.state = state
        self.storage_lock = storage_lock
        super().__init__(*args, **kwargs)

    # --- dispatch -------------------------------------------------------------------------
    def do_GET(self):
        if self.headers.get("Metadata-Flavor") == "Google" or self.split()[0].startswith("/computeMetadata/"):
            return self.metadata()
        if self.refuse_bad_signature():
            return None
        with self.storage_lock:
            return super().do_GET()

    def do_POST(self):
        path, query = self.split()
        if match := SIGN_BLOB_PATH.match(path):
            return self.sign_blob(match["email"])
        if OBJECT_PATH.match(path) and "uploads" in query:
            return self.initiate_multipart_upload(path)
        if OBJECT_PATH.match(path) and "uploadId" in query:
            return self.complete_multipart_upload(path, query["uploadId"][0])
        with self.storage_lock:
            return super().do_POST()

    def do_PUT(self):
        path, query = self.split()
        if self.refuse_bad_signature():
            return None
        if OBJECT_PATH.match(path) and "uploadId" in query:
            return self.upload_part(query["uploadId"][0], int(query["partNumber"][0]))
        with self.storage_lock:
            return super().do_PUT()

    def do_DELETE(self):
        path, query = self.split()
        if OBJECT_PATH.match(path) and "uploadId" in query:
            self.state.uploads.pop(query["uploadId"][0], None)
            return self.reply(HTTPStatus.NO_CONTENT)
        with self.storage_lock:
            return super().do_DELETE()

    # --- helpers ----------------------------------------------------------------------------
    def split(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query, keep_blank_values=True)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, payload, status: int = 200, headers=None):
        self.reply(status, json.dumps(payload).encode(), headers=headers)

    def bearer_is_valid(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.access_token}"

    def refuse_bad_signature(self) -> bool:
        """A V4 signed URL is accepted only with a signature this fake IAM issued."""
        _, query = self.split()
        if "X-Goog-Signature" not in query:
            return False
        signature = query["X-Goog-Signature"][0]
        credential = query.get("X-Goog-Credential", [""])[0]
        valid = signature in self.state.issued_signatures and credential.startswith(
            self.state.service_account_email + "/"
        )
        with self.state.lock:
            if valid:
                self.state.signed_requests += 1
            else:
                self.state.rejected_signed_requests += 1
        if not valid:
            self.reply(HTTPStatus.FORBIDDEN, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", "application/xml")
        return not valid

    # --- metadata server ----------------------------------------------------------------------
    # What Cloud Run's metadata server answers (https://cloud.google.com/run/docs/container-contract#metadata-server,
    # keys as on Compute Engine: https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys). The
    # service account is reachable as `default` and by its e-mail: google-auth asks `default` first, then, once it
    # knows the e-mail, `service-accounts/<email>/?recursive=true` and `<email>/token` on later refreshes.
    def metadata(self):
        path, query = self.split()
        flavor = {"Metadata-Flavor": "Google"}
        if path in ("/", ""):
            return self.reply(200, b"", "text/plain", flavor)
        if self.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in self.headers:
            # The server refuses requests without the header, and forwarded ones (SSRF guard).
            return self.reply(HTTPStatus.FORBIDDEN, b"Missing Metadata-Flavor:Google header.", "text/plain", flavor)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        answer = self.metadata_answer(path, recursive, query)
        if answer is None:
            return self.reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain", flavor)
        status, body = answer
        if isinstance(body, (dict, list)):
            return self.reply_json(body, status=status, headers=flavor)
        return self.reply(status, body.encode(), "application/text", flavor)

    def metadata_answer(self, path: str, recursive: bool, query: dict[str, list[str]]):
        """(status, JSON value or text) for a metadata path, or None for a 404."""
        state = self.state
        info = {"aliases": ["default"], "email": state.service_account_email, "scopes": list(METADATA_SCOPES)}
        accounts = "/computeMetadata/v1/instance/service-accounts"
        if path == "/computeMetadata/v1/project/project-id":
            return 200, state.project
        if path == "/computeMetadata/v1/project/numeric-project-id":
            return 200, PROJECT_NUMBER
        if path in (accounts, accounts + "/"):
            if recursive:
                return 200, {"default": info, state.service_account_email: info}
            return 200, f"default/\n{state.service_account_email}/\n"
        match = re.match(rf"^{accounts}/(?P<account>[^/]+)(?P<key>/[^/]*)?$", path)
        if not match or unquote(match["account"]) not in ("default", state.service_account_email):
            return None
        key = (match["key"] or "/").strip("/")
        if key == "":
            return (200, info) if recursive else (200, "aliases\nemail\nidentity\nscopes\ntoken\n")
        if key == "aliases":
            return 200, "default\n"
        if key == "email":
            return 200, state.service_account_email
        if key == "scopes":
            return 200, "".join(scope + "\n" for scope in METADATA_SCOPES)
        if key == "token":
            return 200, {"access_token": state.access_token, "expires_in": 3599, "token_type": "Bearer"}
        if key == "identity":
            audience = query.get("audience", [""])[0]
            if not audience:
                return 400, "non-empty audience parameter required"
            return 200, self.identity_token(audience, query.get("format", ["standard"])[0] == "full")
        return None

    def identity_token(self, audience: str, full: bool) -> str:
        """An ID token shaped as Google's (a JWT with aud, azp, exp, iat, iss, sub; email when format=full),
        signed with this fake's key: no one outside the rehearsal can verify it, as no one but Google can."""
        now = int(time.time())
        claims = {"aud": audience, "azp": SERVICE_ACCOUNT_ID, "exp": now + 3600, "iat": now,
                  "iss": "https://accounts.google.com", "sub": SERVICE_ACCOUNT_ID}
        if full:
            claims.update(email=self.state.service_account_email, email_verified=True)

        def encode(part: dict | bytes) -> str:
            raw = part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        header = encode({"alg": "RS256", "kid": "fake-key", "typ": "JWT"})
        body = encode(claims)
        signature = hmac.new(self.state.signing_key, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{encode(signature)}"

    # --- IAM Credentials -------------------------------------------------------------------------
    def sign_blob(self, email: str):
        payload = json.loads(self.body() or b"{}").get("payload", "")
        if not self.bearer_is_valid() or unquote(email) != self.state.service_account_email:
            return self.reply_json({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, status=403)
        signature = hashlib.sha256(self.state.signing_key + base64.b64decode(payload)).digest()
        with self.state.lock:
            self.state.sign_blob_calls += 1
            self.state.issued_signatures.add(signature.hex())
        self.reply_json({"keyId": "fake-key", "signedBlob": base64.b64encode(signature).decode()})

    # --- XML multipart upload ----------------------------------------------------------------------
    def initiate_multipart_upload(self, path: str):
        if not self.bearer_is_valid():
            return self.reply(HTTPStatus.UNAUTHORIZED, b"", "application/xml")
        self.body()
        upload_id = uuid.uuid4().hex
        self.state.uploads[upload_id] = {}
        match = OBJECT_PATH.match(path)
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult xmlns="{S3_NAMESPACE}">'
            f"<Bucket>{match['bucket']}</Bucket><Key>{unquote(match['name'])}</Key>"
            f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
        )
        self.reply(200, xml.encode(), "application/xml")

    def upload_part(self, upload_id: str, part_number: int):
        data = self.body()
        if upload_id not in self.state.uploads:
            return self.reply(HTTPStatus.NOT_FOUND, b"<Error><Code>NoSuchUpload</Code></Error>", "application/xml")
        self.state.uploads[upload_id][part_number] = data
        with self.state.lock:
            self.state.part_uploads.append(len(data))
        self.reply(200, b"", "application/xml", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def complete_multipart_upload(self, path: str, upload_id: str):
        if not self.bearer_is_valid():
            return self.reply(HTTPStatus.UNAUTHORIZED, b"", "application/xml")
        root = ElementTree.fromstring(self.body())
        numbers = [int(part.findtext("PartNumber")) for part in root.iter("Part")]
        parts = self.state.uploads.pop(upload_id)
        data = b"".join(parts[number] for number in sorted(numbers))
        match = OBJECT_PATH.match(path)
        bucket, name = match["bucket"], unquote(match["name"])
        self.store_object(bucket, name, data)
        with self.state.lock:
            self.state.completed_multipart_uploads.append(name)
        xml = (f'<CompleteMultipartUploadResult xmlns="{S3_NAMESPACE}"><Bucket>{bucket}</Bucket>'
               f"<Key>{name}</Key></CompleteMultipartUploadResult>")
        self.reply(200, xml.encode(), "application/xml")

    def store_object(self, bucket: str, name: str, data: bytes):
        base_url = f"http://{self.headers.get('Host')}"
        resource = objects._make_object_resource(base_url, bucket, name, "application/octet-stream", str(len(data)))
        resource = objects._checksums(data, resource)
        with self.storage_lock:
            self.storage.create_file(bucket, name, data, resource)

    def log_message(self, format, *args):
        pass


class FakeGoogle:
    """Start with `start()`; `url` is the base for STORAGE_EMULATOR_HOST, GCE_METADATA_HOST and
    MLFLOW_GCP_API_ENDPOINT."""

    def __init__(self, data_dir, bucket: str, service_account_email: str, project: str):
        self.state = FakeGoogleState(service_account_email=service_account_email, project=project)
        self.storage = Storage(use_memory_fs=False, data_dir=str(data_dir))
        buckets.create_bucket(bucket, self.storage)
        self.bucket = bucket
        self._storage_lock = threading.Lock()
        handler = partial(FakeGoogleHandler, self.state, self._storage_lock, self.storage)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> FakeGoogle:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def object_bytes(self, name: str) -> bytes:
        with self._storage_lock:
            return self.storage.get_file(self.bucket, name)

    def object_names(self) -> list[str]:
        with self._storage_lock:
            return list(self.storage.objects.get(self.bucket, {}))

