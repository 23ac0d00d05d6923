"""The adopting module declares what `up` made, field for field: for every settings variant (tests/terraform/
variants.py; `every-setting` sets each setting of `up` to a value other than its default), `up` in the fake, then
`export terraform --import` with the same settings, then each argument the module sets is compared with the API
field it becomes (TABLE), and every argument a resource sets is in the table or is Terraform's own. That is the
proof that `terraform plan` after the import shows no change. The Cloud Run service is compared whole: every field
the module sets is the live one. Then `credentials rotate`: the same module pins the new version."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL, Settings
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources.credential_record import APPLIED
from mlflow_gcp.steps.image_build import LOG_WRITER
from mlflow_gcp.steps.service_json import to_json_dict
from mlflow_gcp.terraform.secrets_tf import SECRETS
from tests.fake_gcp.server import PROJECT, PROJECT_NUMBER
from tests.helpers import cli
from tests.terraform.module_reader import Evaluator, Module, read_tfvars
from tests.terraform.variants import VARIANTS, args, settings

# Module argument (a path through nested blocks) -> field of the resource's REST representation.
TABLE: dict[str, dict[str, str]] = {
    "google_compute_network": {
        "name": "name",
        "auto_create_subnetworks": "autoCreateSubnetworks",
        "description": "description",
    },
    "google_compute_subnetwork": {
        "name": "name",
        "region": "region",
        "network": "network",
        "ip_cidr_range": "ipCidrRange",
        "private_ip_google_access": "privateIpGoogleAccess",
        "description": "description",
    },
    "google_compute_global_address": {
        "name": "name",
        "purpose": "purpose",
        "address_type": "addressType",
        "prefix_length": "prefixLength",
        "network": "network",
        "description": "description",
        "labels": "labels",
    },
    "google_service_networking_connection": {
        "network": "network",
        "service": "service",
        "reserved_peering_ranges": "reservedPeeringRanges",
    },
    "google_sql_database_instance": {
        "name": "name",
        "region": "region",
        "database_version": "databaseVersion",
        "settings.tier": "settings.tier",
        "settings.edition": "settings.edition",
        "settings.deletion_protection_enabled": "settings.deletionProtectionEnabled",
        "settings.disk_autoresize": "settings.storageAutoResize",
        "settings.user_labels": "settings.userLabels",
        "settings.ip_configuration.ipv4_enabled": "settings.ipConfiguration.ipv4Enabled",
        "settings.ip_configuration.private_network": "settings.ipConfiguration.privateNetwork",
        "settings.ip_configuration.ssl_mode": "settings.ipConfiguration.sslMode",
        "settings.backup_configuration.enabled": "settings.backupConfiguration.enabled",
        "settings.backup_configuration.binary_log_enabled": "settings.backupConfiguration.binaryLogEnabled",
    },
    "google_sql_database": {"name": "name", "instance": "instance", "charset": "charset", "collation": "collation"},
    "google_sql_user": {"name": "name", "instance": "instance", "host": "host"},
    "google_vpc_access_connector": {
        "name": "name",
        "region": "name#locations",  # the segment after locations/ in projects/P/locations/REGION/connectors/NAME
        "network": "network",
        "ip_cidr_range": "ipCidrRange",
        "machine_type": "machineType",
        "min_instances": "minInstances",
        "max_instances": "maxInstances",
    },
    "google_service_account": {"account_id": "email", "display_name": "displayName", "description": "description"},
    "google_storage_bucket": {
        "name": "name",
        "location": "location",
        "uniform_bucket_level_access": "iamConfiguration.uniformBucketLevelAccess.enabled",
        "public_access_prevention": "iamConfiguration.publicAccessPrevention",
        "labels": "labels",
        "soft_delete_policy.retention_duration_seconds": "softDeletePolicy.retentionDurationSeconds",
    },
    "google_secret_manager_secret": {
        "secret_id": "name",
        "labels": "labels",
        "replication.auto": "replication.automatic",
        "replication.user_managed.replicas.location": "replication.userManaged.replicas.location",
    },
    "google_artifact_registry_repository": {
        "repository_id": "name",
        "location": "name#locations",
        "format": "format",
        "description": "description",
        "labels": "labels",
    },
}
# Arguments that are Terraform's own (what `destroy` does, provider behaviour), with no API field.
TERRAFORM_ONLY = {"deletion_protection", "force_destroy", "deletion_policy", "disable_on_destroy", "for_each"}
IAM_TYPES = (
    "google_service_account_iam_member",
    "google_storage_bucket_iam_member",
    "google_secret_manager_secret_iam_member",
    "google_artifact_registry_repository_iam_member",
    "google_project_iam_member",
)


def _rest(message: Any) -> dict:
    return json_format.MessageToDict(type(message).pb(message))


def live_resources(fake, s: Settings) -> dict[str, dict]:
    """Address in the module -> the REST representation of what `up` made."""
    clients = Clients(PROJECT)
    p = PROJECT
    sql = clients.sqladmin()
    compute = clients.compute()
    iam = clients.iam().projects().serviceAccounts()
    live = {
        "google_compute_global_address.peering": compute.globalAddresses()
        .get(project=p, address=s.peering_range)
        .execute(),
        "google_sql_database_instance.mlflow": sql.instances().get(project=p, instance=s.db_instance).execute(),
        "google_sql_database.runs": sql.databases()
        .get(project=p, instance=s.db_instance, database=s.db_name)
        .execute(),
        "google_sql_database.auth": sql.databases()
        .get(project=p, instance=s.db_instance, database=s.auth_db_name)
        .execute(),
        "google_service_account.run": iam.get(name=f"projects/{p}/serviceAccounts/{s.service_account_email}").execute(),
        "google_service_account.build": iam.get(
            name=f"projects/{p}/serviceAccounts/{s.build_service_account_email}"
        ).execute(),
        "google_storage_bucket.artifacts": clients.storage().get_bucket(s.bucket_name)._properties,
        "google_artifact_registry_repository.mlflow": _rest(
            clients.artifact_registry().get_repository(
                name=f"projects/{p}/locations/{s.region}/repositories/{s.repository}"
            )
        ),
    }
    users = sql.users().list(project=p, instance=s.db_instance).execute()["items"]
    live["google_sql_user.mlflow"] = next({"host": "%", **u} for u in users if u["name"] == s.db_user)
    connections = (
        clients.service_networking()
        .services()
        .connections()
        .list(
            parent="services/servicenetworking.googleapis.com",
            network=f"projects/{PROJECT_NUMBER}/global/networks/{s.network}",
        )
        .execute()
    )
    live["google_service_networking_connection.private"] = {
        **connections["connections"][0],
        "service": "servicenetworking.googleapis.com",
    }
    for name, secret_id in SECRETS.items():
        secret = clients.secrets().get_secret(name=f"projects/{p}/secrets/{secret_id}")
        live[f"google_secret_manager_secret.{name}"] = _rest(secret)
    if s.network != "default":
        live["google_compute_network.vpc"] = compute.networks().get(project=p, network=s.network).execute()
    if s.vpc_egress == "direct":
        if s.network != "default":
            live["google_compute_subnetwork.egress"] = (
                compute.subnetworks().get(project=p, region=s.region, subnetwork=s.egress_subnet).execute()
            )
    else:
        connector = clients.vpc_access().get_connector(
            name=f"projects/{p}/locations/{s.region}/connectors/{s.connector}"
        )
        live["google_vpc_access_connector.mlflow"] = _rest(connector)
    return live


def _at(value: Any, path: str) -> Any:
    """The value at a dotted path; `field#collection` is the segment after `collection/` in a resource name."""
    path, _, collection = path.partition("#")
    found = _walk(value, path)
    return found.split(f"/{collection}/")[1].split("/")[0] if collection and isinstance(found, str) else found


def _walk(value: Any, path: str) -> Any:
    for key in path.split("."):
        while isinstance(value, list) and len(value) == 1:
            value = value[0]
        value = value.get(key) if isinstance(value, dict) else None
    while isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    return value


def _same(module: Any, live: Any) -> bool:
    """Equal, or the API's longer form of the same name: a URL or a relative name ending in the module's value
    (`projects/P/global/networks/N`, `projects/P/secrets/S`, an email `ID@...`), a location in other case, a
    project by number instead of id."""
    if module == live or str(module) == str(live):
        return True
    if isinstance(module, str) and isinstance(live, str):
        if module.startswith("projects/") and live.startswith("projects/"):
            # The project by number or by id (Service Networking answers with the number; same network).
            return module.split("/", 2)[2] == live.split("/", 2)[2]
        return live.endswith("/" + module) or live.startswith(module + "@") or live.lower() == module.lower()
    if isinstance(module, str) and isinstance(live, list) and len(live) == 1:
        return _same(module, live[0])
    if isinstance(module, list) and isinstance(live, list) and len(module) == len(live):
        return all(_same(m, v) for m, v in zip(module, live, strict=True))
    return False


def _ignored_keys(raw: dict) -> dict[str, set[str]]:
    """Map argument -> the keys of it a resource's `lifecycle.ignore_changes` names (`user_labels["k"]`)."""
    found: dict[str, set[str]] = {}
    for argument, key in re.findall(r'(\w+)\[\\?"([^"\\]+)\\?"\]', str(raw.get("lifecycle", ""))):
        found.setdefault(argument, set()).add(key)
    return found


def _argument_paths(body: dict, prefix: str = "") -> list[str]:
    """Every argument a resource body sets, as a path through its nested blocks (maps are one argument)."""
    paths = []
    for key, value in body.items():
        if key in ("depends_on", "lifecycle"):
            continue
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
            and key
            not in (
                "labels",
                "user_labels",
            )
        ):
            nested = [p for v in value for p in _argument_paths(v, f"{prefix}{key}.")]
            paths += nested or [f"{prefix}{key}"]  # an empty block (`auto {}`) is itself the argument
        else:
            paths.append(f"{prefix}{key}")
    return paths


def _references(fake, s: Settings) -> dict[str, Any]:
    clients = Clients(PROJECT)
    network_id = f"projects/{PROJECT}/global/networks/{s.network}"
    refs = {
        "data.google_compute_network.vpc.id": network_id,
        "google_compute_network.vpc.id": network_id,
        "google_compute_subnetwork.egress.name": s.egress_subnet,
        "google_compute_global_address.peering.name": s.peering_range,
        "google_sql_database_instance.mlflow.name": s.db_instance,
        "google_service_account.run.email": s.service_account_email,
        "google_service_account.build.email": s.build_service_account_email,
        "google_service_account.run.name": f"projects/{PROJECT}/serviceAccounts/{s.service_account_email}",
        "google_artifact_registry_repository.mlflow.location": s.region,
        "google_artifact_registry_repository.mlflow.name": s.repository,
        "google_storage_bucket.artifacts.name": s.bucket_name,
        "google_vpc_access_connector.mlflow.id": f"projects/{PROJECT}/locations/{s.region}/connectors/{s.connector}",
        "data.google_project.this.number": PROJECT_NUMBER,
        "each.value": "(each)",
        **{f"google_secret_manager_secret.{n}.id": f"projects/{PROJECT}/secrets/{sid}" for n, sid in SECRETS.items()},
    }
    for name in ("mysql", "mlflow"):
        secret = clients.secrets().get_secret(name=f"projects/{PROJECT}/secrets/{SECRETS[name]}")
        refs[f"data.google_secret_manager_secret.{name}.effective_annotations"] = dict(secret.annotations)
    return refs


def adopt(fake, directory: Path, variant: str) -> tuple[Module, Any]:
    module = export(directory, "--import", *args(variant))
    return module, Evaluator(module, read_tfvars(directory / "terraform.tfvars"), _references(fake, settings(variant)))


def export(directory: Path, *arguments: str) -> Module:
    result = cli("export", "terraform", str(directory), *arguments)
    assert result.exit_code == 0, result.output
    return Module.load(directory)


def _evaluator(module: Module, directory: Path, refs: dict[str, Any]) -> Evaluator:
    return Evaluator(module, read_tfvars(directory / "terraform.tfvars"), lambda ref: refs[ref])


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


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _as_rest_json(body: dict, top: bool = True) -> dict:
    """A Terraform block body as the REST JSON of the same object (blocks listed once become objects)."""
    repeated = {"containers", "env", "ports", "network_interfaces"}
    result = {}
    for key, value in body.items():
        if key in ("depends_on", "lifecycle") or (top and key in ("name", "location")):
            continue
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
            and key not in ("labels", "limits")
        ):
            nested = [_as_rest_json(v, top=False) for v in value]
            result[_snake_to_camel(key)] = nested if key in repeated else nested[0]
        else:
            result[_snake_to_camel(key)] = value
    return result


def _policy_key(key: str) -> str:
    """The fake's key of a policy, from the resource part of an import ID."""
    return f"projects/_/buckets/{key[2:]}" if key.startswith("b/") else key


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_adopting_module_is_what_up_made_field_for_field(fake, container_dir, tmp_path, variant):
    s = settings(variant)
    result = cli("up", *args(variant))
    assert result.exit_code == 0, result.output
    directory = tmp_path / "tf"
    module = export(directory, "--import", *args(variant))
    refs = _references(fake, s)
    evaluate = _evaluator(module, directory, refs).value
    resources = module.resources()
    live = live_resources(fake, s)

    # Every resource but the service, the grants and the APIs: each argument through the table.
    compared = set()
    for address, raw in resources.items():
        type_ = address.split(".")[0]
        if type_ in IAM_TYPES or type_ in ("google_cloud_run_v2_service", "google_project_service"):
            continue
        body = evaluate(raw)
        assert address in live, f"{address}: the module declares it, `up` did not make it"
        paths = _argument_paths(body)
        # And the other way: a field of the table the live resource has is one the module sets (a field it left to
        # the provider's default would be planned back to that default).
        unset = [p for p, field in TABLE[type_].items() if p not in paths and _at(live[address], field) is not None]
        assert not unset, f"{address}: the live resource has {unset}, the module does not set them"
        for path in paths:
            if path in TERRAFORM_ONLY:
                continue
            assert path in TABLE[type_], f"{address}.{path} is not in the table of module arguments -> API fields"
            want, got = _at(body, path), _at(live[address], TABLE[type_][path])
            ignored = _ignored_keys(raw).get(path.rsplit(".", 1)[-1], set())
            if ignored and isinstance(got, dict):  # keys Terraform leaves alone (lifecycle.ignore_changes)
                got = {k: v for k, v in got.items() if k not in ignored}
            assert _same(want, got), f"{address}.{path}: module {want!r}, live {TABLE[type_][path]} {got!r}"
            compared.add(address)
    assert compared == set(live), set(live) ^ compared  # each resource `up` made is declared

    # The grants: on each resource, to the accounts `up` made.
    for address, raw in resources.items():
        type_ = address.split(".")[0]
        if type_ not in IAM_TYPES:
            continue
        grant = evaluate(raw)
        key = module.imports()[address].split(" ")[0]
        if type_ == "google_project_iam_member":
            key = f"projects/{key}"
        assert grant["member"] in fake.members(_policy_key(key), grant["role"]), address
    logs = evaluate(resources["google_project_iam_member.build_writes_logs"])
    assert logs["role"] == LOG_WRITER

    # The APIs: the ones `up` enabled.
    enabled = {a.split('"')[1] for a in module.imports() if a.startswith("google_project_service.")}
    assert enabled == {api.strip('"') for api in module.locals()["apis"]} and enabled <= fake.enabled

    # Cloud Run: every field the module sets is the live one, the server's URLs (extra hosts) included.
    service = to_json_dict(
        Clients(PROJECT)
        .run_services()
        .get_service(name=f"projects/{PROJECT}/locations/{s.region}/services/{s.service}"),
        defaults=True,
    )
    tf_service = _as_rest_json(evaluate(resources["google_cloud_run_v2_service.mlflow"]))
    assert _subset_differences(tf_service, service) == []
    tf_env = {e["name"] for e in tf_service["template"]["containers"][0]["env"]}
    assert tf_env == {e["name"] for e in service["template"]["containers"][0]["env"]}

    # Every import names a declared resource, and every declared resource is imported.
    imports = module.imports()
    assert set(imports) == {a for a in resources if not a.startswith("google_project_service.")} | {
        a for a in imports if a.startswith("google_project_service.")
    }


def test_after_a_rotation_the_adopted_module_pins_the_new_versions(fake, tmp_path, monkeypatch):
    """`credentials rotate` keeps the record on each password secret; the module exported before the rotation
    reads it, so `apply` after a rotation never pins the old password (which rotate disabled)."""
    from tests.server_double import deploy

    deploy(fake, tmp_path, monkeypatch)
    directory = tmp_path / "tf"
    before = export(directory, "--import")
    pinned_before = _pinned(before, directory, fake)
    rotated = cli("credentials", "rotate")
    assert rotated.exit_code == 0, rotated.output
    live = _live_pins(fake)
    assert live[SECRET_MYSQL] != pinned_before[SECRET_MYSQL] and live[SECRET_MLFLOW] != pinned_before[SECRET_MLFLOW]
    # The module written before the rotation, planned after it: the versions the service runs with now.
    assert _pinned(before, directory, fake) == live
    # Exported again: the same.
    again = tmp_path / "again"
    assert _pinned(export(again, "--import"), again, fake) == live


def _pinned(module: Module, directory: Path, fake) -> dict[str, str]:
    refs = _references(fake, Settings(project=PROJECT))
    service = _evaluator(module, directory, refs).value(module.resources()["google_cloud_run_v2_service.mlflow"])
    env = service["template"][0]["containers"][0]["env"]
    return {
        e["value_source"][0]["secret_key_ref"][0]["secret"]: str(e["value_source"][0]["secret_key_ref"][0]["version"])
        for e in env
        if "value_source" in e
    }


def _live_pins(fake) -> dict[str, str]:
    env = fake.run_service("mlflow")["template"]["containers"][0]["env"]
    return {
        e["valueSource"]["secretKeyRef"]["secret"]: e["valueSource"]["secretKeyRef"]["version"]
        for e in env
        if "valueSource" in e
    }


def test_a_secret_with_no_record_keeps_the_version_pinned_at_export(fake, container_dir, tmp_path):
    assert cli("up").exit_code == 0
    directory = tmp_path / "tf"
    module = export(directory, "--import")
    refs = _references(fake, Settings(project=PROJECT))
    refs["data.google_secret_manager_secret.mysql.effective_annotations"] = {}  # made by hand: no record
    service = _evaluator(module, directory, refs).value(module.resources()["google_cloud_run_v2_service.mlflow"])
    env = service["template"][0]["containers"][0]["env"]
    versions = {e["name"]: e["value_source"][0]["secret_key_ref"][0]["version"] for e in env if "value_source" in e}
    assert versions["MYSQL_CREDENTIALS"] == _live_pins(fake)[SECRET_MYSQL]
    assert APPLIED in refs["data.google_secret_manager_secret.mlflow.effective_annotations"]


def test_adopting_a_custom_network_imports_it(fake, container_dir, tmp_path):
    assert cli("up").exit_code == 0
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
