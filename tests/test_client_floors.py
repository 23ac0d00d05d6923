"""The client libraries installed have every field the tool sends or reads.

An older library silently drops a field it does not know (google-cloud-run before 0.10.9 has no
`invoker_iam_disabled`: `from_json(..., ignore_unknown_fields=True)` would deploy a private service), or fails to
read an answer Google gives today. CI runs the suite once more with the lowest versions pyproject.toml allows
(`constraints-lowest.txt`), so these checks hold for the floors too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from packaging.version import Version

from mlflow_gcp.config import Settings
from mlflow_gcp.service_spec import ServiceInputs, build_service

ROOT = Path(__file__).resolve().parent.parent


def test_cloud_run_knows_every_field_of_the_service():
    from google.cloud import run_v2

    desired = build_service(
        Settings(project="demo-project"),
        ServiceInputs("europe-west1-docker.pkg.dev/p/r/i:t", "projects/p/locations/r/connectors/c", ("https://u",)),
    )
    service = run_v2.Service.from_json(json.dumps(desired))  # strict: an unknown field raises
    assert service.invoker_iam_disabled is desired["invokerIamDisabled"]
    for read in ("urls", "uri", "reconciling", "terminal_condition", "latest_ready_revision"):
        assert read in run_v2.Service.meta.fields, read


def test_cloud_run_reads_every_reason_google_gives_a_job_execution_that_never_started():
    # An execution's conditions are parsed strictly for enums: a reason the library does not know is a ParseError,
    # not a dropped field (google-cloud-run before 0.10.18 has no VPC_NETWORK_NOT_FOUND).
    from google.cloud import run_v2

    known = {reason.name for reason in run_v2.Condition.CommonReason}
    assert {"SECRETS_ACCESS_CHECK_FAILED", "CONTAINER_MISSING", "VPC_NETWORK_NOT_FOUND"} <= known


def test_cloud_build_knows_the_build_account_and_its_logging():
    from google.cloud.devtools import cloudbuild_v1

    build = cloudbuild_v1.Build(
        service_account="projects/p/serviceAccounts/mlflow-build@p.iam.gserviceaccount.com",
        options={"logging": cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY},
        source={"storage_source": {"bucket": "b", "object_": "o", "generation": 1}},
    )
    assert build.options.logging.name == "CLOUD_LOGGING_ONLY"


def test_artifact_registry_reads_a_repository_as_google_answers_it():
    """Google's repositories carry `registryUri`; a library without it cannot read the create operation."""
    from google.cloud import artifactregistry_v1

    assert "registry_uri" in artifactregistry_v1.Repository.meta.fields


def _floors() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return {m[0].lower(): m[1] for m in re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9][^",<]*)', block)}


def test_the_lowest_constraints_pin_every_floor():
    """`constraints-lowest.txt` installs exactly the floors of pyproject.toml: raise both together."""
    pins = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    floors = _floors()
    assert floors, "no floor found in pyproject.toml"
    for name, version in floors.items():
        pinned = pins.get(name)
        assert pinned is not None and Version(pinned) == Version(version), (
            f"{name}: pyproject.toml says >={version}, constraints-lowest.txt says {pinned}"
        )
    assert set(pins) == set(floors), "constraints-lowest.txt pins a package that is no direct dependency"
