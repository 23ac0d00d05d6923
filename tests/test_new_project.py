"""A new project whose APIs are not enabled yet (nothing deployed): `down` says there is nothing to delete and
exits 0; `credentials` says there is no server yet, without a raw 403 dump. Nothing is sent that changes a thing."""

from __future__ import annotations

from tests.helpers import cli


def test_down_on_a_project_with_its_apis_disabled_has_nothing_to_delete(fake):
    assert fake.enabled == set()  # only Service Usage answers
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    assert "Nothing is deployed in demo-project" in " ".join(result.stdout.split())
    assert "Error:" not in result.output  # (preflight may warn that the APIs are not enabled: that is true)
    assert fake.mutating_requests() == []


def test_down_with_only_storage_enabled_is_the_same(fake):
    fake.enabled |= {"storage.googleapis.com"}  # on by default in new projects
    result = cli("down", "--yes", "--delete-data")
    assert result.exit_code == 0, result.output
    assert "Nothing is deployed" in result.stdout
    assert fake.mutating_requests() == []


def test_credentials_on_a_project_with_its_apis_disabled_says_there_is_no_server(fake):
    for args in (("credentials",), ("credentials", "rotate")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        text = " ".join(result.stderr.split())
        assert "Nothing is deployed in demo-project" in text and "mlflow-gcp up" in text, text
        assert "403" not in text and "Forbidden" not in text and "Unexpected" not in text
        assert result.stdout == ""
    assert fake.mutating_requests() == []
