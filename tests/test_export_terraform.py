"""`mlflow-gcp export terraform`: the module parses as HCL2, every type, argument and block exists in the `google`
provider's schema, checkov finds no failing check, and it declares what `up` creates (same owned fields), with
`import` blocks whose IDs name the resources `up` made.

No Terraform binary runs here (`terraform init` downloads providers), so these are the proofs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.service_spec import SERVICE_URLS_VAR
from mlflow_gcp.steps.deploy import to_json_dict
from mlflow_gcp.steps.image import LOG_WRITER
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli
from tests.terraform.module_reader import Evaluator, Module, read_tfvars, schema_problems

REGION = "europe-west1"
SA = f"run-mlflow@{PROJECT}.iam.gserviceaccount.com"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
CHECKOV_CANDIDATES = ("/opt/checkov-venv/bin/checkov",)


def export(directory: Path, *args: str) -> Module:
    result = cli("export", "terraform", str(directory), *args)
    assert result.exit_code == 0, result.output
    return Module.load(directory)


@pytest.fixture
def module_dir(fake, container_dir, tmp_path) -> Path:
    directory = tmp_path / "tf"
    export(directory)
    return directory


def test_writes_the_module_files_and_the_build_context(module_dir):
    names = {p.name for p in module_dir.iterdir()}
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf", "terraform.tfvars", "README.md"} <= names
    assert (module_dir / "server-image" / "Dockerfile").is_file()
    versions = Module.load(module_dir).files["versions.tf"]["terraform"][0]["required_providers"][0]
    assert versions["google"]["version"] == '"~> 6.0"'  # pinned to a major version
    assert "random" in versions
    readme = (module_dir / "README.md").read_text()
    for command in ("terraform init", "terraform plan", "terraform apply", "gcloud builds submit", 'backend "gcs"'):
        assert command in readme
    assert "state" in readme and "plain text" in readme


def test_every_setting_is_a_variable_with_the_tools_default(module_dir):
    from mlflow_gcp.config import setting_fields

    variables = Module.load(module_dir).variables()
    for f in setting_fields():
        assert f.name in variables
        if f.name != "project":
            default = variables[f.name]
            assert (default.strip('"') if isinstance(default, str) else default) == f.default, f.name


def test_an_existing_module_is_not_overwritten_without_force(module_dir):
    (module_dir / "main.tf").write_text("# mine\n")
    result = cli("export", "terraform", str(module_dir))
    assert result.exit_code == 2
    assert "--force" in result.output
    assert (module_dir / "main.tf").read_text() == "# mine\n"
    assert cli("export", "terraform", str(module_dir), "--force").exit_code == 0


@pytest.mark.parametrize("network", ["default", "team-net"])
def test_every_type_argument_and_block_exists_in_the_provider_schema(fake, container_dir, tmp_path, network):
    module = export(tmp_path / "tf", "--network", network)
    assert schema_problems(module) == []


def test_the_schema_check_can_fail(module_dir):
    module = Module.load(module_dir)
    instance = module.resources()["google_sql_database_instance.mlflow"]
    instance["settings"][0]["ip_configuration"][0]["ipv4_enabeld"] = False  # a typo
    instance["settings"][0]["backup_configuration"][0]["binary_log"] = [{"__is_block__": True}]
    del module.resources()["google_sql_database.runs"]["name"]
    problems = schema_problems(module)
    assert any("no argument ipv4_enabeld" in p for p in problems)
    assert any("no argument binary_log" in p or "no block binary_log" in p for p in problems)
    assert any("google_sql_database.runs: required argument name is missing" in p for p in problems)


def _checkov() -> str | None:
    configured = os.environ.get("MLFLOW_GCP_CHECKOV")
    candidates = [configured] if configured else [*CHECKOV_CANDIDATES, shutil.which("checkov")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _checkov_report(directory: Path) -> dict:
    checkov = _checkov()
    if checkov is None:
        pytest.skip("checkov is not installed (.ci/run installs it in /opt/checkov-venv)")
    done = subprocess.run(
        [checkov, "-d", str(directory), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


def test_checkov_finds_no_failing_check_and_every_skip_has_a_reason(module_dir):
    report = _checkov_report(module_dir)
    results = report["results"]
    assert results["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert report["summary"]["parsing_errors"] == 0
    assert results["passed_checks"]
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment") or "") > 20, skipped["check_id"]


def test_checkov_would_fail_a_public_database(module_dir):
    main = module_dir / "main.tf"
    main.write_text(main.read_text().replace("ipv4_enabled    = false", "ipv4_enabled    = true"))
    results = _checkov_report(module_dir)["results"]
    assert "CKV_GCP_60" in {c["check_id"] for c in results["failed_checks"]}


# -- equivalence with what `up` creates --------------------------------------------------------------------------
SECRETS = {"env": SECRET_ENV, "mysql": SECRET_MYSQL, "mlflow": SECRET_MLFLOW, "flask_key": SECRET_FLASK_KEY}


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _as_rest_json(body: dict, top: bool = True) -> dict:
    """A Terraform block body as the REST JSON of the same object (blocks listed once become objects)."""
    repeated = {"containers", "env", "ports"}
    result = {}
    for key, value in body.items():
        if key == "depends_on" or (top and key in ("name", "location")):
            continue
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
            and key
            not in (
                "labels",
                "limits",
            )
        ):
            nested = [_as_rest_json(v, top=False) for v in value]
            result[_snake_to_camel(key)] = nested if key in repeated else nested[0]
        else:
            result[_snake_to_camel(key)] = value
    return result


def _subset_differences(want, live, path: str = "") -> list[str]:
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [d for k, v in want.items() for d in _subset_differences(v, live.get(k), f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return [f"{path}: {live!r} != {want!r}"]
        pairs = enumerate(zip(want, live, strict=True))
        return [d for i, (w, v) in pairs for d in _subset_differences(w, v, f"{path}[{i}]")]
    return [] if str(want) == str(live) else [f"{path}: live {live!r} != module {want!r}"]


@pytest.fixture
def deployed(fake, container_dir):
    result = cli("up")
    assert result.exit_code == 0, result.output
    return Clients(PROJECT)


def test_the_adopting_module_declares_what_up_created_and_imports_it(fake, deployed, tmp_path):
    clients = deployed
    module = export(tmp_path / "tf", "--import")
    tfvars = read_tfvars(tmp_path / "tf" / "terraform.tfvars")
    resources = module.resources()
    instance = clients.sqladmin().instances().get(project=PROJECT, instance="mlflow-tracking-database").execute()
    service = to_json_dict(
        clients.run_services().get_service(name=f"projects/{PROJECT}/locations/{REGION}/services/mlflow"),
        defaults=True,
    )
    network_id = f"projects/{PROJECT}/global/networks/default"
    references = {
        "data.google_compute_network.vpc.id": network_id,
        "google_compute_global_address.peering.name": "mlflow-private-services",
        "google_sql_database_instance.mlflow.name": "mlflow-tracking-database",
        "google_service_account.run.email": SA,
        "google_service_account.build.email": f"mlflow-build@{PROJECT}.iam.gserviceaccount.com",
        "google_artifact_registry_repository.mlflow.location": REGION,
        "google_artifact_registry_repository.mlflow.name": "mlflow",
        "google_service_account.run.name": f"projects/{PROJECT}/serviceAccounts/{SA}",
        "google_storage_bucket.artifacts.name": f"{PROJECT}-mlflow-artifacts",
        "google_vpc_access_connector.mlflow.id": f"{LOCATION}/connectors/vpc-connector-mlflow",
        "data.google_project.this.number": "0",  # only in the deterministic URL, checked apart
        "each.value": "(each)",
        **{f"google_secret_manager_secret.{n}.id": f"projects/{PROJECT}/secrets/{s}" for n, s in SECRETS.items()},
    }
    evaluate = Evaluator(module, tfvars, lambda ref: references[ref]).value

    def body(address: str) -> dict:
        return evaluate(resources[address])

    # Cloud SQL: the instance and its owned fields, databases, user.
    tf_instance = body("google_sql_database_instance.mlflow")
    settings = tf_instance["settings"][0]
    assert tf_instance["name"] == instance["name"]
    assert tf_instance["database_version"] == instance["databaseVersion"]
    assert tf_instance["region"] == instance["region"]
    assert settings["tier"] == instance["settings"]["tier"]
    assert settings["edition"] == instance["settings"].get("edition", "ENTERPRISE")
    assert settings["user_labels"] == instance["settings"]["userLabels"]
    assert settings["deletion_protection_enabled"] is instance["settings"]["deletionProtectionEnabled"] is True
    ip = settings["ip_configuration"][0]
    assert ip["ipv4_enabled"] is instance["settings"]["ipConfiguration"]["ipv4Enabled"] is False
    assert instance["settings"]["ipConfiguration"]["privateNetwork"].endswith(ip["private_network"])
    assert ip["ssl_mode"] == instance["settings"]["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    backups = settings["backup_configuration"][0]
    assert backups["enabled"] is backups["binary_log_enabled"] is True
    live_dbs = {
        d["name"]: d
        for d in clients.sqladmin().databases().list(project=PROJECT, instance=instance["name"]).execute()["items"]
    }
    for name in ("runs", "auth"):
        tf_db = body(f"google_sql_database.{name}")
        assert (tf_db["charset"], tf_db["collation"]) == (
            live_dbs[tf_db["name"]]["charset"],
            live_dbs[tf_db["name"]]["collation"],
        )
    users = clients.sqladmin().users().list(project=PROJECT, instance=instance["name"]).execute()["items"]
    tf_user = body("google_sql_user.mlflow")
    assert (tf_user["name"], tf_user["host"]) in {(u["name"], u.get("host", "%")) for u in users}
    assert tf_user["password"] is None or tf_user["password"] == "null"  # adopted: the secret's password stays

    # Network: the peering range and the private services connection.
    address = clients.compute().globalAddresses().get(project=PROJECT, address="mlflow-private-services").execute()
    tf_address = body("google_compute_global_address.peering")
    assert (tf_address["name"], tf_address["purpose"], tf_address["address_type"], tf_address["prefix_length"]) == (
        address["name"],
        address["purpose"],
        address["addressType"],
        address["prefixLength"],
    )
    assert tf_address["labels"] == address["labels"]
    assert body("google_service_networking_connection.private")["reserved_peering_ranges"] == [address["name"]]

    # Connector.
    connector = clients.vpc_access().get_connector(name=references["google_vpc_access_connector.mlflow.id"])
    tf_connector = body("google_vpc_access_connector.mlflow")
    assert (
        tf_connector["ip_cidr_range"],
        tf_connector["machine_type"],
        tf_connector["min_instances"],
        tf_connector["max_instances"],
    ) == (connector.ip_cidr_range, connector.machine_type, connector.min_instances, connector.max_instances)
    assert connector.network.rsplit("/", 1)[-1] == tf_connector["network"]

    # Service account and the grants on each resource.
    account = clients.iam().projects().serviceAccounts().get(name=f"projects/{PROJECT}/serviceAccounts/{SA}").execute()
    assert body("google_service_account.run")["display_name"] == account["displayName"]
    grants = {
        "google_service_account_iam_member.run_signs_blobs": f"projects/{PROJECT}/serviceAccounts/{SA}",
        "google_storage_bucket_iam_member.run_writes_artifacts": f"b/{PROJECT}-mlflow-artifacts",
        **{
            f"google_secret_manager_secret_iam_member.run_reads_{n}": f"projects/{PROJECT}/secrets/{s}"
            for n, s in SECRETS.items()
        },
    }
    build_account = f"mlflow-build@{PROJECT}.iam.gserviceaccount.com"
    built = (
        clients.iam()
        .projects()
        .serviceAccounts()
        .get(name=f"projects/{PROJECT}/serviceAccounts/{build_account}")
        .execute()
    )
    assert body("google_service_account.build")["display_name"] == built["displayName"]
    grants["google_artifact_registry_repository_iam_member.build_pushes_images"] = f"{LOCATION}/repositories/mlflow"
    for address_, key in grants.items():
        grant = body(address_)
        assert grant["member"] in fake.members(_policy_key(fake, key), grant["role"]), address_
    logs = body("google_project_iam_member.build_writes_logs")
    assert logs["member"] in fake.members(f"projects/{PROJECT}", logs["role"]) and logs["role"] == LOG_WRITER
    iam_types = {a for a in resources if "_iam_" in a}
    # Grants on resources only; on the project, only the build account's log writing (as `up` does).
    assert {a.split(".")[0] for a in iam_types} - {"google_project_iam_member"} <= {
        "google_service_account_iam_member",
        "google_storage_bucket_iam_member",
        "google_secret_manager_secret_iam_member",
        "google_artifact_registry_repository_iam_member",
    }
    assert [a for a in iam_types if a.startswith("google_project_iam_member")] == [
        "google_project_iam_member.build_writes_logs"
    ]

    # Bucket.
    bucket = clients.storage().get_bucket(f"{PROJECT}-mlflow-artifacts")
    tf_bucket = body("google_storage_bucket.artifacts")
    assert tf_bucket["location"] == bucket.location.upper()
    assert tf_bucket["uniform_bucket_level_access"] is bucket.iam_configuration.uniform_bucket_level_access_enabled
    assert tf_bucket["public_access_prevention"] == bucket.iam_configuration.public_access_prevention
    assert tf_bucket["labels"] == bucket.labels

    # Secrets: same ids, labels and replication.
    for name, secret_id in SECRETS.items():
        secret = clients.secrets().get_secret(name=f"projects/{PROJECT}/secrets/{secret_id}")
        tf_secret = body(f"google_secret_manager_secret.{name}")
        assert tf_secret["secret_id"] == secret_id
        assert tf_secret["labels"] == dict(secret.labels)
        assert "auto" in tf_secret["replication"][0] and secret.replication.automatic is not None
    assert not any(a.startswith("google_secret_manager_secret_version.") for a in resources)  # never re-written

    # Artifact Registry.
    repository = clients.artifact_registry().get_repository(
        name=f"projects/{PROJECT}/locations/{REGION}/repositories/mlflow"
    )
    tf_repository = body("google_artifact_registry_repository.mlflow")
    assert tf_repository["format"] == repository.format_.name
    assert tf_repository["labels"] == dict(repository.labels)

    # Cloud Run: every field the module sets is the live one (the URL list is Cloud Run's own).
    tf_service = _as_rest_json(body("google_cloud_run_v2_service.mlflow"))
    tf_env = tf_service["template"]["containers"][0]["env"]
    urls_var = next(e for e in tf_env if e["name"] == SERVICE_URLS_VAR)
    tf_env.remove(urls_var)
    live_env = service["template"]["containers"][0]["env"]
    live_urls = next(e for e in live_env if e["name"] == SERVICE_URLS_VAR)
    live_env.remove(live_urls)
    assert _subset_differences(tf_service, service) == []
    assert {e["name"] for e in tf_env} == {e["name"] for e in live_env}

    # Each import block names a resource `up` made, and every declared resource is imported.
    imports = module.imports()
    declared = {a for a in resources if not a.startswith(("random_", "google_project_service."))}
    assert declared <= set(imports)
    assert imports["google_sql_database_instance.mlflow"] == f"projects/{PROJECT}/instances/{instance['name']}"
    assert imports["google_cloud_run_v2_service.mlflow"] == f"projects/{PROJECT}/locations/{REGION}/services/mlflow"
    assert imports["google_vpc_access_connector.mlflow"] == references["google_vpc_access_connector.mlflow.id"]
    assert imports["google_secret_manager_secret.mysql"] == f"projects/{PROJECT}/secrets/{SECRET_MYSQL}"
    assert imports["google_compute_global_address.peering"] == f"projects/{PROJECT}/global/addresses/{address['name']}"
    assert imports["google_service_networking_connection.private"] == (
        f"projects/{PROJECT}/global/networks/default:servicenetworking.googleapis.com"
    )
    assert imports["google_sql_user.mlflow"] == f"{PROJECT}/{instance['name']}/%/{tf_user['name']}"
    for name in ("runs", "auth"):
        db = body(f"google_sql_database.{name}")["name"]
        assert (
            imports[f"google_sql_database.{name}"] == f"projects/{PROJECT}/instances/{instance['name']}/databases/{db}"
        )
    assert imports["google_storage_bucket.artifacts"] == f"{PROJECT}/{bucket.name}"
    assert imports["google_service_account.run"] == account["name"]
    assert imports["google_artifact_registry_repository.mlflow"] == repository.name
    for address_, key in grants.items():
        grant = body(address_)
        assert imports[address_] == f"{key} {grant['role']} {grant['member']}"
    assert imports["google_project_iam_member.build_writes_logs"] == f"{PROJECT} {LOG_WRITER} {logs['member']}"
    assert imports["google_service_account.build"] == built["name"]
    enabled = {a.split('"')[1] for a in imports if a.startswith("google_project_service.")}
    assert enabled == {api.strip('"') for api in module.locals()["apis"]}
    assert enabled <= fake.enabled
    assert all(imports[f'google_project_service.apis["{api}"]'] == f"{PROJECT}/{api}" for api in enabled)


def _policy_key(fake, key: str) -> str:
    """The fake's key of a policy, from the resource part of an import ID."""
    return f"projects/_/buckets/{key[2:]}" if key.startswith("b/") else key


def test_a_new_module_makes_its_passwords_in_the_secrets_formats(module_dir):
    module = Module.load(module_dir)
    resources = module.resources()
    references = {f"random_password.{n}.result": f"<{n}-password>" for n in ("mysql", "mlflow", "flask_key")}
    evaluate = Evaluator(module, read_tfvars(module_dir / "terraform.tfvars"), lambda ref: references.get(ref, ref))
    versions = {a.split(".")[1]: evaluate.value(b) for a, b in resources.items() if "secret_version" in a}
    assert versions["mysql"]["secret_data"] == "root:<mysql-password>"  # user:password
    assert versions["mlflow"]["secret_data"] == "admin:<mlflow-password>"  # login:password
    assert versions["env"]["secret_data"].startswith("DB_HOST=google_sql_database_instance.mlflow.private_ip_address\n")
    assert evaluate.value(resources["google_sql_user.mlflow"])["password"] == "<mysql-password>"
    env = evaluate.value(resources["google_cloud_run_v2_service.mlflow"])["template"][0]["containers"][0]["env"]
    pinned = {e["name"]: e["value_source"][0]["secret_key_ref"][0]["version"] for e in env if "value_source" in e}
    assert pinned["MYSQL_CREDENTIALS"] == "google_secret_manager_secret_version.mysql.version"
    assert all(e.get("value") is None or "${" not in e["value"] for e in env)
    assert module.imports() == {}  # nothing to adopt without --import


def test_adopting_a_custom_network_imports_it(fake, deployed, tmp_path):
    module = export(tmp_path / "tf", "--import")
    assert "google_compute_network.vpc" not in module.imports()  # the default network is Google's: read only
    custom = export(tmp_path / "custom", "--import", "--network", "team-net")
    assert custom.imports()["google_compute_network.vpc"] == f"projects/{PROJECT}/global/networks/team-net"
    assert "google_compute_network.vpc" in custom.resources()


def test_import_without_a_deployment_is_a_clear_error(fake, container_dir, tmp_path):
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    result = cli("export", "terraform", str(tmp_path / "tf"), "--import")
    assert result.exit_code == 1
    assert "no deployment to adopt" in result.output and "without --import" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "tf").exists()
