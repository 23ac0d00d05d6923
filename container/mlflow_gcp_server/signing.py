"""Signed URLs without a private key: sign through the IAM Credentials `signBlob` API.

On Cloud Run the service account's credentials come from the metadata server and hold no private
key, so `Blob.generate_signed_url` fails (MLflow issue 21847). Wrapping those credentials in
`IamSigningCredentials` makes them `Signing` credentials: google-cloud-storage then signs V4 URLs
through `signBlob`, which needs `roles/iam.serviceAccountTokenCreator` for the service account
on itself.
"""

from __future__ import annotations

import base64
import os

import google.auth
from google.auth import credentials as auth_credentials
from google.auth import crypt
from google.auth.exceptions import DefaultCredentialsError, TransportError
from google.auth.transport.requests import AuthorizedSession, Request

SIGNING_SERVICE_ACCOUNT_VAR = "MLFLOW_GCP_SIGNING_SERVICE_ACCOUNT"
# The project's endpoint rule: https://{api}.googleapis.com/{path} -> $MLFLOW_GCP_API_ENDPOINT/{api}/{path}.
API_ENDPOINT_VAR = "MLFLOW_GCP_API_ENDPOINT"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def iam_credentials_base_url() -> str:
    override = os.environ.get(API_ENDPOINT_VAR, "").rstrip("/")
    return f"{override}/iamcredentials" if override else "https://iamcredentials.googleapis.com"


def sign_blob_url(service_account_email: str) -> str:
    return f"{iam_credentials_base_url()}/v1/projects/-/serviceAccounts/{service_account_email}:signBlob"


class IamBlobSigner(crypt.Signer):
    def __init__(self, session: AuthorizedSession, service_account_email: str):
        self._session = session
        self._url = sign_blob_url(service_account_email)

    @property
    def key_id(self):
        return None

    def sign(self, message):
        if isinstance(message, str):
            message = message.encode("utf-8")
        response = self._session.post(self._url, json={"payload": base64.b64encode(message).decode("ascii")})
        if response.status_code != 200:
            raise TransportError(f"IAM signBlob failed with HTTP {response.status_code}: {response.text[:300]}")
        return base64.b64decode(response.json()["signedBlob"])


class IamSigningCredentials(auth_credentials.Credentials, auth_credentials.Signing):
    """Delegates tokens to `source` and signs through IAM as `service_account_email`."""

    def __init__(self, source: auth_credentials.Credentials, service_account_email: str):
        super().__init__()
        self._source = source
        self._email = service_account_email
        self._signer = IamBlobSigner(AuthorizedSession(source), service_account_email)

    def refresh(self, request):
        self._source.refresh(request)
        self.token = self._source.token
        self.expiry = self._source.expiry

    @property
    def signer_email(self):
        return self._email

    @property
    def signer(self):
        return self._signer

    def sign_bytes(self, message):
        return self._signer.sign(message)


def storage_credentials():
    """Application Default Credentials able to sign URLs, and their project; (None, None) without ADC."""
    try:
        credentials, project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        return None, None
    email = os.environ.get(SIGNING_SERVICE_ACCOUNT_VAR)
    if email and not isinstance(credentials, auth_credentials.Signing):
        credentials = IamSigningCredentials(credentials, email)
    return credentials, project


def refreshed(credentials):
    if credentials is not None and not credentials.valid:
        credentials.refresh(Request())
    return credentials
