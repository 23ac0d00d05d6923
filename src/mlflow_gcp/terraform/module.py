"""The Terraform module of a deployment: the same resources, names and security properties as `mlflow-gcp up`.

Two modes:
- new (default): passwords from ephemeral `random_password`s, written to Cloud SQL and Secret Manager through
  write-only arguments (never in the state); Terraform makes the secret versions.
- adopt (`--import`): for a deployment that `up` or a person already made. Secret versions stay as they are (the
  passwords are never read into code): the service pins the version each password's user has, read from the
  record `up` and `credentials rotate` keep on the secret, and `import` blocks name every existing resource, so
  `terraform plan` creates and replaces nothing.

Only the variables the module uses are declared (a setting that decides which resources exist is fixed at export,
see main_tf), so changing any variable changes the deployment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflow_gcp.config import Settings, extra_host_names, setting_fields
from mlflow_gcp.steps.image_storage import IMAGE_NAME
from mlflow_gcp.terraform.hcl import Block, Expr, aligned_lines, render_file, render_value
from mlflow_gcp.terraform.main_tf import LiveDeployment, MainTf
from mlflow_gcp.terraform.secrets_tf import SECRETS

GOOGLE_PROVIDER = "~> 6.50"  # write-only arguments; the schema the tests check against (6.50.0)
RANDOM_PROVIDER = "~> 3.7"  # ephemeral random_password
TIME_PROVIDER = "~> 0.13"
TERRAFORM_VERSION = ">= 1.11"  # write-only arguments, ephemeral resources, import blocks

HEADER = "# Written by `mlflow-gcp export terraform`. The same deployment as `mlflow-gcp up`."
# Files the export writes, some only in one mode: `--force` replaces the whole set.
OWNED_FILES = (
    "versions.tf",
    "variables.tf",
    "main.tf",
    "outputs.tf",
    "imports.tf",
    "terraform.tfvars",
    "README.md",
    ".gitignore",
)
GITIGNORE = """# Terraform's working files and state: the state holds the deployment's details (keep it in a backend).
.terraform/
*.tfstate
*.tfstate.*
*.tfplan
crash.log
crash.*.log
"""
_VARIABLE = re.compile(r"\bvar\.(\w+)")

__all__ = ["LiveDeployment", "ModuleFiles", "build_module"]


@dataclass(frozen=True)
class ModuleFiles:
    files: dict[str, str]  # file name -> content


def _variable(name: str, description: str, type_: str, default=None, *, required: bool = False) -> Block:
    body: dict = {"description": description, "type": Expr(type_)}
    if not required:
        body["default"] = default
    return Block("variable", (name,), body)


def _variables(used: set[str], adopt: LiveDeployment | None) -> list[Block]:
    blocks = []
    for f in setting_fields():
        if f.name not in used:
            continue
        if f.name == "extra_hosts":
            blocks.append(_variable(f.name, f.metadata["help"], "list(string)", []))
            continue
        is_int = isinstance(f.default, int)
        blocks.append(
            _variable(
                f.name, f.metadata["help"], "number" if is_int else "string", f.default, required=f.name == "project"
            )
        )
    blocks.append(
        _variable(
            "image",
            "Server image; empty means the image `mlflow-gcp up` builds from container/ (see README.md to build it).",
            "string",
            "",
        )
    )
    if adopt is not None:
        blocks.append(
            _variable(
                "secret_versions",
                "Secret id -> version the service runs with, as at the export (managed by `mlflow-gcp up` and "
                "`credentials rotate`, not by Terraform; for the passwords, the record on the secret wins).",
                "map(string)",
                {secret: adopt.secret_versions.get(secret, "latest") for secret in SECRETS.values()},
            )
        )
    else:
        blocks.append(
            _variable(
                "password_version",
                "Generation of the passwords: raise it by one to make new ones (see README.md, Passwords).",
                "number",
                1,
            )
        )
    return blocks


def _tfvars(settings: Settings, image: str, used: set[str]) -> str:
    pairs = []
    for f in setting_fields():
        if f.name not in used:
            continue
        value = getattr(settings, f.name)
        if f.name == "bucket":
            value = settings.bucket_name
        if f.name == "extra_hosts":
            value = extra_host_names(value)
        if f.name == "project" or value != (f.default if f.name != "extra_hosts" else []):
            pairs.append((f.name, render_value(value, 0)))
    pairs.append(("image", render_value(image, 0)))
    lines = ["# The settings of this deployment (tool defaults are in variables.tf).", *aligned_lines(pairs, "")]
    return "\n".join(lines) + "\n"


def _versions(waits: bool) -> list[Block]:
    providers = {
        "google": {"source": "hashicorp/google", "version": GOOGLE_PROVIDER},
        "random": {"source": "hashicorp/random", "version": RANDOM_PROVIDER},
    }
    if waits:
        providers["time"] = {"source": "hashicorp/time", "version": TIME_PROVIDER}
    return [
        Block(
            "terraform",
            body={
                "required_version": TERRAFORM_VERSION,
                "required_providers": Block("required_providers", body=providers),
            },
        ),
        Block("provider", ("google",), {"project": Expr("var.project"), "region": Expr("var.region")}),
    ]


def _outputs() -> list[Block]:
    outputs = {
        "url": ("The server's URL (its login is in the mlflow-credentials secret).", "local.service_url"),
        "bucket": ("Artifact bucket.", "google_storage_bucket.artifacts.name"),
        "service_account": ("Service account the server runs as.", "google_service_account.run.email"),
    }
    blocks = [
        Block("output", (name,), {"description": text, "value": Expr(expr)}) for name, (text, expr) in outputs.items()
    ]
    secrets = {name: Expr(f"google_secret_manager_secret.{name}.secret_id") for name in SECRETS}
    blocks.append(Block("output", ("secrets",), {"description": "Secret Manager secrets.", "value": secrets}))
    return blocks


def build_module(
    settings: Settings, *, image_tag: str, adopt: LiveDeployment | None = None, with_imports: bool = False
) -> ModuleFiles:
    """The module's files for `settings`; `adopt` (with `import` blocks when `with_imports`) for an existing
    deployment."""
    from mlflow_gcp.terraform.imports import import_blocks
    from mlflow_gcp.terraform.readme import module_readme

    image_default = "${var.region}-docker.pkg.dev/${var.project}/${var.repository}/" + f"{IMAGE_NAME}:{image_tag}"
    image = (adopt.image if adopt and adopt.image else None) or (
        f"{settings.region}-docker.pkg.dev/{settings.project}/{settings.repository}/{IMAGE_NAME}:{image_tag}"
    )
    waits = adopt is None
    main = render_file(MainTf(settings, adopt, image_default).blocks(), HEADER)
    versions = render_file(_versions(waits), HEADER)
    outputs = render_file(_outputs(), HEADER)
    used = set(_VARIABLE.findall(main + versions + outputs))
    files = {
        "versions.tf": versions,
        "variables.tf": render_file(_variables(used, adopt), HEADER),
        "main.tf": main,
        "outputs.tf": outputs,
        "terraform.tfvars": _tfvars(settings, image, used),
        "README.md": module_readme(settings, image, adopted=adopt is not None),
        ".gitignore": GITIGNORE,
    }
    if with_imports:
        files["imports.tf"] = render_file(import_blocks(settings, SECRETS), HEADER)
    return ModuleFiles(files)
