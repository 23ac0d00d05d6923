"""A secret version that is not UTF-8 text (Notepad's "Unicode" is UTF-16, with a byte-order mark or not), or
that holds other bytes: a clear error naming the secret and the version and what to do, never
"Unexpected error: UnicodeDecodeError" (issue 20)."""

from __future__ import annotations

import pytest

from mlflow_gcp.config import SECRET_ENV, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.settings_document import SETTINGS_SECRET
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat

ENCODINGS = {
    "utf-16-bom": lambda text: text.encode("utf-16"),
    "utf-16-le": lambda text: text.encode("utf-16-le"),  # valid UTF-8, a NUL every other byte
    "latin-1": lambda text: (text + "é").encode("latin-1"),
}


def add_version(secret_id: str, data: bytes) -> str:
    from mlflow_gcp.gcp.clients import Clients

    version = (
        Clients(PROJECT)
        .secrets()
        .add_secret_version(parent=f"projects/{PROJECT}/secrets/{secret_id}", payload={"data": data})
    )
    return version.name.rsplit("/", 1)[-1]


def assert_clear_error(result, secret_id: str, number: str) -> None:
    text = flat(result.output)
    assert result.exit_code == 1, text
    assert f"Version {number} of the secret {secret_id} is not UTF-8 text" in text, text
    assert "What to do:" in text and "Traceback" not in text and "Unexpected error" not in text


@pytest.mark.parametrize(
    "secret_id, encoding",
    [(SETTINGS_SECRET, e) for e in ENCODINGS] + [(SECRET_ENV, "utf-16-bom")],
)
def test_a_settings_document_not_in_utf8_is_a_clear_error(fake, double, secret_id, encoding):
    number = add_version(secret_id, ENCODINGS[encoding](fake.secret_value(secret_id)))
    fake.clear_log()
    up = cli("up")
    assert_clear_error(up, secret_id, number)
    assert not [r for r in fake.mutating_requests() if r.api != "secretmanager" or "versions" in r.path], (
        "nothing is changed"
    )
    status = cli("status")
    assert status.exit_code == 1
    assert f"Version {number} of the secret {secret_id} is not UTF-8 text" in flat(status.output)


@pytest.mark.parametrize("secret_id", [SECRET_MYSQL, SECRET_MLFLOW])
@pytest.mark.parametrize("encoding", ["utf-16-bom", "utf-16-le"])
def test_a_password_version_not_in_utf8_is_a_clear_error_and_up_keeps_the_one_in_use(fake, double, secret_id, encoding):
    number = add_version(secret_id, ENCODINGS[encoding](fake.secret_value(secret_id)))
    rotate = cli("credentials", "rotate")
    assert_clear_error(rotate, secret_id, number)
    assert f"gcloud secrets versions destroy {number} --secret {secret_id}" in flat(rotate.output)
    assert double.database_ok()
    up = cli("up")
    assert up.exit_code == 0, up.output
    assert double.database_ok()
