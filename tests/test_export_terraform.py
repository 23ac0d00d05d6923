"""`mlflow-gcp export terraform`: the module parses as HCL2, `terraform fmt` leaves it as it is, every type, argument
and block exists in the providers' schemas, checkov finds no failing check, no password reaches the state, every
declared variable changes something, and `--force` replaces the whole set of files. What the module declares is
what `up` made: tests/test_export_terraform_equivalence.py.

No provider is downloaded here (`terraform init` would), so these are the proofs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlflow_gcp.config import ENCRYPTED_ONLY, Settings, setting_fields
from mlflow_gcp.terraform.blocks import checkov_skips
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli
from tests.terraform.module_reader import Evaluator, Module, read_tfvars, schema_problems
from tests.terraform.variants import VARIANTS, args, settings

CHECKOV_CANDIDATES = ("/opt/checkov-venv/bin/checkov",)
TERRAFORM_CANDIDATES = ("/usr/local/bin/terraform",)
# Settings a variant fixes at export (which resources exist, or what cannot change after creation): no variable.
FIXED_AT_EXPORT = {"vpc_egress", "secret_replication", "db_ssl_mode"}
# Settings of `up` that no resource of the module has: the bucket Cloud Build reads sources from (README.md names it).
OUTSIDE_THE_MODULE = {"staging_bucket"}


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
    terraform = Module.load(module_dir).files["versions.tf"]["terraform"][0]
    versions = terraform["required_providers"][0]
    assert versions["google"]["version"] == '"~> 6.50"'  # write-only arguments; the schema checked here
    assert versions["random"]["version"] == '"~> 3.7"'  # ephemeral random_password
    assert versions["time"]["source"] == '"hashicorp/time"'
    assert terraform["required_version"] == '">= 1.11"'  # write-only arguments
    ignored = (module_dir / ".gitignore").read_text().split()
    assert {".terraform/", "*.tfstate", "*.tfstate.*"} <= set(ignored)
    readme = (module_dir / "README.md").read_text()
    for command in ("terraform init", "terraform plan", "terraform apply", "gcloud builds submit", 'backend "gcs"'):
        assert command in readme
    # The image is built before the apply that makes the service.
    assert readme.index("gcloud builds submit") < readme.index("terraform apply plan.tfplan")
    assert readme.index("-target=google_artifact_registry_repository.mlflow") < readme.index("gcloud builds submit")
    assert "never in the Terraform state" in readme and "password_version" in readme
    for wait in ("time_sleep.apis_ready", "time_sleep.grants_ready", "time_sleep.default_network"):
        assert wait in readme


def test_the_mlflow_version_setting_is_the_image_the_module_builds(fake, container_dir, tmp_path):
    """`--mlflow-version` (remembered by `up`): the image tag is the one `up` gives that image, and the copied build
    context pins that MLflow, so `gcloud builds submit --tag` (no build arguments) builds it (issue 24)."""
    from mlflow_gcp import build_context

    pinned = build_context.mlflow_pin(container_dir)
    other = "3.1.4" if pinned != "3.1.4" else "3.2.0"
    directory = tmp_path / "tf"
    export(directory, "--mlflow-version", other)
    tag = build_context.image_tag(container_dir, other)
    assert tag != build_context.context_hash(container_dir)
    assert read_tfvars(directory / "terraform.tfvars")["image"].endswith(f":{tag}")
    copied = directory / "server-image"
    assert build_context.mlflow_pin(copied) == other
    original = (container_dir / "requirements.txt").read_text().splitlines()
    written = (copied / "requirements.txt").read_text().splitlines()
    assert [a for a, b in zip(original, written, strict=True) if a != b] == [f"mlflow[auth]=={pinned}"]
    readme = " ".join((directory / "README.md").read_text().split())
    assert f"pins MLflow {other}, the `mlflow-version` setting" in readme
    plain = tmp_path / "plain"
    export(plain)
    assert read_tfvars(plain / "terraform.tfvars")["image"].endswith(f":{build_context.context_hash(container_dir)}")
    assert (plain / "server-image" / "requirements.txt").read_text() == (container_dir / "requirements.txt").read_text()
    assert "the `mlflow-version` setting" not in (plain / "README.md").read_text()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_declared_variable_changes_something_and_every_setting_is_accounted_for(
    fake, container_dir, tmp_path, variant
):
    directory = tmp_path / "tf"
    module = export(directory, *args(variant))
    variables = module.variables()
    code = "".join((directory / name).read_text() for name in ("main.tf", "versions.tf", "outputs.tf"))
    used = set(re.findall(r"\bvar\.(\w+)", code))
    assert set(variables) == used  # nothing declared that nothing reads
    tfvars = read_tfvars(directory / "terraform.tfvars")
    assert set(tfvars) <= set(variables)
    settings = Settings(project=PROJECT)
    for f in setting_fields():
        if f.name in variables:
            default = variables[f.name]
            if f.name == "extra_hosts":
                assert default == []
            elif f.name != "project":
                assert (default.strip('"') if isinstance(default, str) else default) == f.default, f.name
        else:
            # Fixed at export, or a resource this variant does not have (the connector with direct egress...).
            assert f.name in FIXED_AT_EXPORT | OUTSIDE_THE_MODULE or getattr(settings, f.name) is not None, f.name
    fixed = FIXED_AT_EXPORT - set(variables)
    assert fixed == FIXED_AT_EXPORT


def test_variables_a_variant_does_not_use_are_not_declared(fake, container_dir, tmp_path):
    direct = export(tmp_path / "direct", *args("direct-auto")).variables()
    assert not {n for n in direct if n.startswith("connector")}
    assert "egress_subnet" not in direct  # the default network's own subnet
    assert {"egress_subnet", "egress_subnet_range"} <= set(
        export(tmp_path / "custom", *args("direct-custom")).variables()
    )
    connector = export(tmp_path / "connector").variables()
    assert "connector_range" in connector and "egress_subnet" not in connector


def test_an_existing_module_is_not_overwritten_without_force(module_dir):
    (module_dir / "main.tf").write_text("# mine\n")
    result = cli("export", "terraform", str(module_dir))
    assert result.exit_code == 2
    assert "--force" in result.output
    assert (module_dir / "main.tf").read_text() == "# mine\n"
    assert cli("export", "terraform", str(module_dir), "--force").exit_code == 0


def test_force_replaces_the_whole_set_of_files(module_dir):
    (module_dir / "imports.tf").write_text("# an adoption exported before\n")
    (module_dir / "server-image" / "stale.py").write_text("# from an older build context\n")
    (module_dir / "backend.tf").write_text("# the team's own\n")
    assert cli("export", "terraform", str(module_dir), "--force").exit_code == 0
    assert not (module_dir / "imports.tf").exists()  # no import blocks beside a new-mode main.tf
    assert not (module_dir / "server-image" / "stale.py").exists()
    assert (module_dir / "server-image" / "Dockerfile").is_file()
    assert (module_dir / "backend.tf").read_text() == "# the team's own\n"  # not the export's: kept


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_type_argument_and_block_exists_in_the_provider_schema(fake, container_dir, tmp_path, variant):
    module = export(tmp_path / "tf", *args(variant))
    assert schema_problems(module) == []


def test_the_schema_check_can_fail(module_dir):
    module = Module.load(module_dir)
    instance = module.resources()["google_sql_database_instance.mlflow"]
    instance["settings"][0]["ip_configuration"][0]["ipv4_enabeld"] = False  # a typo
    instance["settings"][0]["backup_configuration"][0]["binary_log"] = [{"__is_block__": True}]
    del module.resources()["google_sql_database.runs"]["name"]
    module.resources()["time_sleep.apis_ready"]["create_duraton"] = '"60s"'
    problems = schema_problems(module)
    assert any("no argument ipv4_enabeld" in p for p in problems)
    assert any("no argument binary_log" in p or "no block binary_log" in p for p in problems)
    assert any("google_sql_database.runs: required argument name is missing" in p for p in problems)
    assert any("time_sleep.apis_ready: no argument create_duraton" in p for p in problems)


def _terraform() -> str:
    configured = os.environ.get("MLFLOW_GCP_TERRAFORM")
    candidates = [configured] if configured else [*TERRAFORM_CANDIDATES, shutil.which("terraform")]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        pytest.skip("terraform is not installed: `terraform fmt -check` not run (set MLFLOW_GCP_TERRAFORM)")
    return found


def test_every_exported_module_is_as_terraform_fmt_writes_it(fake, container_dir, tmp_path):
    terraform = _terraform()
    for variant in VARIANTS:
        export(tmp_path / variant, *args(variant))
    export(tmp_path / "unformatted")
    main = tmp_path / "unformatted" / "main.tf"
    main.write_text(main.read_text().replace("  deletion_protection = true", "  deletion_protection= true", 1))
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    # Only the file spoiled on purpose: the check can fail, and no exported file fails it.
    assert done.returncode != 0 and done.stdout.split() == [str(main.relative_to(tmp_path))], done.stdout


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


def test_the_tls_skip_reason_follows_the_ssl_mode():
    def reason(mode: str) -> str:
        skips = dict(checkov_skips("google_sql_database_instance", Settings(project=PROJECT, db_ssl_mode=mode)))
        return skips["CKV_GCP_6"]

    assert "ENCRYPTED_ONLY requires TLS" in reason(ENCRYPTED_ONLY)
    allowed = reason("ALLOW_UNENCRYPTED_AND_ENCRYPTED")
    assert "ALLOW_UNENCRYPTED_AND_ENCRYPTED" in allowed and "unencrypted connections are accepted" in allowed
    assert "ENCRYPTED_ONLY" not in allowed.replace("ALLOW_UNENCRYPTED_AND_ENCRYPTED", "")


@pytest.mark.parametrize("variant", ["defaults", "tier-and-user", "every-setting"])
def test_a_new_module_keeps_every_password_out_of_the_state(fake, container_dir, tmp_path, variant):
    directory = tmp_path / "tf"
    module = export(directory, *args(variant))
    resources = module.resources()
    ephemeral = module.resources("ephemeral")
    assert set(ephemeral) == {f"random_password.{n}" for n in ("mysql", "mlflow", "flask_key")}
    assert not any(a.startswith("random_") for a in resources)  # a managed random_password keeps its result
    references = {f"ephemeral.random_password.{n}.result": f"<{n}-password>" for n in ("mysql", "mlflow", "flask_key")}
    evaluate = Evaluator(module, read_tfvars(directory / "terraform.tfvars"), lambda ref: references.get(ref, ref))
    versions = {a.split(".")[1]: evaluate.value(b) for a, b in resources.items() if "secret_version" in a}
    s = settings(variant)
    assert versions["mysql"]["secret_data_wo"] == f"{s.db_user}:<mysql-password>"  # user:password
    assert versions["mlflow"]["secret_data_wo"] == f"{s.mlflow_username}:<mlflow-password>"  # login:password
    assert versions["flask_key"]["secret_data_wo"] == "<flask_key-password>"
    for name in ("mysql", "mlflow", "flask_key"):
        assert "secret_data" not in versions[name]  # write-only only
        assert versions[name]["secret_data_wo_version"] == 1
    assert versions["env"]["secret_data"].startswith("DB_HOST=google_sql_database_instance.mlflow.private_ip_address\n")
    user = evaluate.value(resources["google_sql_user.mlflow"])
    assert user["password_wo"] == "<mysql-password>" and "password" not in user
    # Every value that comes from a random password goes to a write-only argument (`*_wo`) and nowhere else.
    text = (directory / "main.tf").read_text()
    for line in text.splitlines():
        if "random_password" in line and "=" in line:
            assert line.split("=")[0].strip().endswith("_wo"), line
    env = evaluate.value(resources["google_cloud_run_v2_service.mlflow"])["template"][0]["containers"][0]["env"]
    pinned = {e["name"]: e["value_source"][0]["secret_key_ref"][0]["version"] for e in env if "value_source" in e}
    assert pinned["MYSQL_CREDENTIALS"] == "google_secret_manager_secret_version.mysql.version"
    assert all(e.get("value") is None or "${" not in e["value"] for e in env)
    assert module.imports() == {}  # nothing to adopt without --import


def test_a_new_project_applies_in_one_go(module_dir):
    """API enablement first, and the waits Google needs: every resource that calls an API waits for the APIs
    (directly or through a resource that does), the default network is read after it appears, the service is made
    after the grants apply."""
    module = Module.load(module_dir)
    resources = module.resources()
    waits = {a: b for a, b in resources.items() if a.startswith("time_sleep.")}
    assert waits["time_sleep.apis_ready"]["depends_on"] == ["${google_project_service.apis}"]
    assert waits["time_sleep.default_network"]["depends_on"] == ["${time_sleep.apis_ready}"]
    assert module.resources("data")["google_compute_network.vpc"]["depends_on"] == ["${time_sleep.default_network}"]
    assert module.resources("data")["google_project.this"]["depends_on"] == ["${time_sleep.apis_ready}"]
    assert resources["google_cloud_run_v2_service.mlflow"]["depends_on"] == ["${time_sleep.grants_ready}"]
    grants = {a for a in resources if "_iam_member.run_" in a}
    assert {d.strip("${}") for d in waits["time_sleep.grants_ready"]["depends_on"]} == grants

    def depends(address: str) -> set[str]:
        body = json.dumps(resources.get(address) or module.resources("data").get(address) or {})
        found = set(re.findall(r"\b((?:google|time)_\w+\.\w+)", body))
        found |= {f"data.{d}" for d in re.findall(r"data\.(google_\w+\.\w+)", body)}
        return {d.removeprefix("data.") if d.startswith("data.") else d for d in found} - {address}

    def waits_for_apis(address: str, seen: frozenset = frozenset()) -> bool:
        if address == "time_sleep.apis_ready":
            return True
        return any(waits_for_apis(d, seen | {address}) for d in depends(address) - seen)

    late = [a for a in resources if a != "google_project_service.apis" and not a.startswith("time_sleep.apis")]
    assert [a for a in late if not waits_for_apis(a)] == []
