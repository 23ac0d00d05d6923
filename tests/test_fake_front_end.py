"""The fake's front end behaves like Google's: a request whose body did not arrive whole is never applied, and
Secret Manager verifies the CRC32C sent with a version (and refuses an empty payload)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import google_crc32c
import pytest
from google.api_core import exceptions as gexc

from mlflow_gcp.config import SECRET_MLFLOW
from mlflow_gcp.gcp.clients import Clients
from tests.fake_gcp.server import PROJECT
from tests.helpers import ALL_APIS_ENABLED

SECRET = f"projects/{PROJECT}/secrets/{SECRET_MLFLOW}"


@pytest.fixture
def sm(fake):
    fake.enabled |= ALL_APIS_ENABLED
    Clients(PROJECT).secrets().create_secret(
        parent=f"projects/{PROJECT}", secret_id=SECRET_MLFLOW, secret={"replication": {"automatic": {}}}
    )
    return fake


def send_cut_short(fake, path: str, body: bytes, sent: int) -> None:
    """What a client killed between its headers and its body sends: the full Content-Length, part of the body."""
    url = urlsplit(fake.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn.sendall(head + body[:sent])
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1024)  # the fake closes without an answer


@pytest.mark.parametrize("sent", [0, 10])
def test_a_body_shorter_than_its_length_is_never_applied(sm, sent):
    body = json.dumps({"replication": {"automatic": {}}}).encode()
    send_cut_short(sm, f"/secretmanager/v1/projects/{PROJECT}/secrets?secretId=cut-short", body, sent)
    assert f"projects/{PROJECT}/secrets/cut-short" not in sm.state["secrets"]
    assert [entry[3] for entry in sm.truncated] == [sent]


def test_a_version_whose_checksum_does_not_match_is_refused(sm):
    client = Clients(PROJECT).secrets()
    with pytest.raises(gexc.BadRequest):
        client.add_secret_version(parent=SECRET, payload={"data": b"admin:password", "data_crc32c": 12345})
    with pytest.raises(gexc.BadRequest):
        client.add_secret_version(parent=SECRET, payload={"data": b""})
    assert sm.state["secret_versions"][SECRET] == []
    data = b"admin:password"
    client.add_secret_version(parent=SECRET, payload={"data": data, "data_crc32c": google_crc32c.value(data)})
    assert sm.secret_value(SECRET_MLFLOW) == "admin:password"


def test_up_sends_a_checksum_with_every_version(fake, container_dir):
    from tests.helpers import cli

    result = cli("up")
    assert result.exit_code == 0, result.output
    versions = [v for vs in fake.state["secret_versions"].values() for v in vs]
    assert versions and all(v["clientSpecifiedPayloadChecksum"] for v in versions)
