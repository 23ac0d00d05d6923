"""Settings validation: every bad value gets one clear sentence, exit code 2, and no request is sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mlflow_gcp.config import Settings, env_var, setting_fields, validate
from mlflow_gcp.errors import ConfigError

GOOD = Settings(project="demo-project", region="europe-west1")

BAD_VALUES = [
    ({"project": ""}, "No project given"),
    ({"project": "My_Project"}, "Project id 'My_Project' is not valid"),
    ({"project": "abc"}, "Project id 'abc' is not valid"),
    ({"project": "123456789012"}, "Project id '123456789012' is not valid"),
    ({"project": "ends-with-hyphen-"}, "is not valid"),
    ({"region": "Europe West"}, "Region 'Europe West'"),
    ({"bucket": "UPPER"}, "Bucket name 'UPPER' breaks Cloud Storage rules"),
    ({"bucket": "ab"}, "Bucket name 'ab' breaks"),
    ({"bucket": "goog-artifacts"}, "may not start with 'goog'"),
    ({"bucket": "my-google-bucket"}, "contain 'google'"),
    ({"bucket": "192.168.5.4"}, "IP address"),
    ({"bucket": "a..b"}, "Bucket name 'a..b'"),
    ({"connector_range": "10.8.0.0/24"}, "must be an IPv4 /28"),
    ({"connector_range": "10.8.0.1/28"}, "is not a network in CIDR notation"),
    ({"connector_range": "8.8.8.0/28"}, "private"),
    ({"connector_range": "nonsense"}, "is not a network"),
    ({"db_instance": "mlflow_tracking_database"}, "Cloud SQL instance 'mlflow_tracking_database' is not valid"),
    ({"connector": "a-connector-name-that-is-far-too-long"}, "Connector"),
    ({"service_account": "run"}, "Service account 'run'"),
    ({"mlflow_username": "ad:min"}, "MLflow login 'ad:min'"),
    ({"mlflow_username": ""}, "MLflow login"),
    ({"db_name": "mlflow-db"}, "Database 'mlflow-db'"),
    ({"db_tier": "f1-micro"}, "Cloud SQL tier"),
    ({"db_edition": "STANDARD"}, "edition"),
    ({"max_instances": 0}, "Cloud Run instances"),
    ({"connector_min_instances": 3, "connector_max_instances": 3}, "Connector instances"),
    ({"memory": "1GB"}, "Memory '1GB'"),
    ({"service": "MLflow"}, "Cloud Run service 'MLflow'"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES)
def test_bad_value_is_named(overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(replace(GOOD, **overrides))
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_defaults_are_valid_and_follow_the_seed():
    settings = validate(GOOD)
    assert settings.bucket_name == "demo-project-mlflow-artifacts"
    assert settings.db_name == "mlflow_tracking_database"
    assert settings.connector == "vpc-connector-mlflow"
    assert settings.service_account_email == "run-mlflow@demo-project.iam.gserviceaccount.com"


def test_default_bucket_name_problem_suggests_the_flag():
    with pytest.raises(ConfigError, match="pass --bucket"):
        validate(replace(GOOD, project="google-team-1"))


def test_env_example_lists_every_setting():
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    for field in setting_fields():
        assert env_var(field.name) in text, field.name
    assert "MLFLOW_GCP_API_ENDPOINT" in text
