"""The README.md written beside the exported module."""

from __future__ import annotations

from mlflow_gcp.config import Settings
from mlflow_gcp.labels import SCHEMA_LABEL
from mlflow_gcp.resources.credential_record import APPLIED
from mlflow_gcp.terraform.blocks import WAITS

BUILD_CONTEXT_DIR = "server-image"

STATE_BACKEND = """Keep the state in a bucket that only the administrators of the deployment can read, with object
versioning on (it names every resource and holds the `mlflow-env` settings), for example in a `backend.tf`:

```hcl
terraform {
  backend "gcs" {
    bucket = "YOUR_PROJECT-terraform-state" # gcloud storage buckets create ... --uniform-bucket-level-access
    prefix = "mlflow"                       # gcloud storage buckets update ... --versioning
  }
}
```

`.gitignore` keeps `.terraform/` and local state files out of git; commit `.terraform.lock.hcl`."""


def _fixed(settings: Settings) -> str:
    network = (
        "the `default` network (read, never made)"
        if settings.network == "default"
        else (f"the custom network `{settings.network}` (made by the module)")
    )
    egress = (
        "Direct VPC egress" + ("" if settings.network == "default" else f" (subnet `{settings.egress_subnet}`)")
        if settings.vpc_egress == "direct"
        else f"the Serverless VPC Access connector `{settings.connector}`"
    )
    return f"""## Settings fixed at export

Some settings decide which resources exist, or cannot change once a resource is made, so the module is written
for them instead of taking them as variables. This module has: {network}; the server reaches the database through
{egress}; secret replication `{settings.secret_replication}` (it cannot change after a secret is made: another
replication block would replace the secrets and destroy their versions, the passwords); Cloud SQL `sslMode`
`{settings.db_ssl_mode}`. To change one, export again with the new setting (`--force`). Every variable in
`variables.tf` changes the deployment."""


def mlflow_version_note(settings: Settings) -> str:
    """With the `mlflow-version` setting (another MLflow than the tool's pin): what the copied context installs."""
    from mlflow_gcp import build_context

    try:
        pinned = build_context.mlflow_pin(build_context.container_dir())
    except Exception:
        return ""
    if not settings.mlflow_version or pinned in (None, settings.mlflow_version):
        return ""
    return f"""

Its `requirements.txt` pins MLflow {settings.mlflow_version}, the `mlflow-version` setting, in place of the tested
{pinned} of this mlflow-gcp: the image is the one `mlflow-gcp up` builds with that setting, under the tag `up` gives
it. Terraform does not migrate the database: the server of a newer MLflow refuses a database that holds data of an
older one (it makes fresh schemas only in an empty one). Upgrade with `mlflow-gcp up --mlflow-version VERSION`
(a backup first, the migration run apart, rolled back if it fails), then export again (`--force`)."""


def module_readme(settings: Settings, image: str, *, adopted: bool) -> str:
    if adopted:
        commands = """```bash
terraform init
terraform plan -out plan.tfplan   # every resource "to import"; nothing to add, change or destroy
terraform apply plan.tfplan
terraform output url
```"""
        passwords = f"""## Adopting the existing deployment

`imports.tf` names every resource that exists today by its import ID (Terraform 1.5+ `import` blocks).
`terraform plan` must show them as *to import* and nothing to create, change or replace; stop if it shows otherwise.

The passwords stay outside Terraform: the secret versions are never declared, and Terraform never reads a password.
The service pins, for `mysql-credentials` and `mlflow-credentials`, the version recorded on the secret as the one its
user has (the annotation `{APPLIED}`, kept by `mlflow-gcp up` and `mlflow-gcp credentials rotate`; the module reads
it with a `google_secret_manager_secret` data source), so `terraform apply` after a rotation pins the new password,
never the old one. `secret_versions` in variables.tf (the versions at export) is used only for a secret with no
record and for `mlflow-env` and the session key. The service's template labels are ignored
(`lifecycle.ignore_changes`): `up` and `rotate` mark the revision that brings in a new password with one. So is
the Cloud SQL instance's label `{SCHEMA_LABEL}`: `up` records on it the MLflow version whose schema the databases
hold (it decides whether the next `up` migrates), and Terraform does not migrate.

### State

{STATE_BACKEND}"""
        image_section = f"""## The server image

The service runs `{image}`, the image running at export. To build a new one from the tool's `container/` directory
(copied here as `{BUILD_CONTEXT_DIR}/`), see `mlflow-gcp up`, or build it with
`gcloud builds submit {BUILD_CONTEXT_DIR} --project {settings.project} --region {settings.region} --tag IMAGE`
and set `image`.""" + mlflow_version_note(settings)
    else:
        commands = f"""The server image must exist before the service is made, so the first apply makes the APIs and the
Artifact Registry repository, then the image is built, then everything else:

```bash
terraform init
terraform apply -target=google_artifact_registry_repository.mlflow -target=google_service_account.build \\
  -target=google_artifact_registry_repository_iam_member.build_pushes_images \\
  -target=google_project_iam_member.build_writes_logs
gcloud builds submit {BUILD_CONTEXT_DIR} --project {settings.project} --region {settings.region} \\
  --tag {image}
terraform plan -out plan.tfplan
terraform apply plan.tfplan
terraform output url
```

(Or set `image` to an image of your own and run `terraform apply` once.)

### Waits on a new project

A new project applies in one go: the APIs are enabled first (every resource depends on them), and the module waits
where Google needs time (`time_sleep`, provider `hashicorp/time`, as Google's own modules do):
""" + "\n".join(f"- `time_sleep.{name}` ({duration}): {why}." for name, (duration, why) in WAITS.items())
        passwords = f"""## Passwords

Ephemeral `random_password`s make the MySQL and MLflow admin passwords and the server's session key, written to
Cloud SQL and Secret Manager through write-only arguments (`password_wo`, `secret_data_wo`; Terraform 1.11 or newer):
**they are never in the Terraform state or the plan**. Terraform owns these secret versions:

- To change the passwords, raise `password_version` by one and `terraform apply`: new versions of the three
  secrets, the MySQL user's new password, and a new revision of the service pinning them (the old versions are
  destroyed after). Do not use `mlflow-gcp credentials rotate` on a deployment this module made: the next apply
  would pin the versions Terraform made, which `rotate` disabled.
- If a first apply stopped between the MySQL user and its secret (the two could then differ), raise
  `password_version` and apply again: both get the same new password.

### State

{STATE_BACKEND}"""
        image_section = f"""## The server image

The service runs `{image}`. `mlflow-gcp up` builds it from the tool's `container/` directory, copied here as
`{BUILD_CONTEXT_DIR}/` (its tag is the hash of that directory); the commands above build it with Cloud Build.\
{mlflow_version_note(settings)}

In organisations where Cloud Build's default account holds no role (secure by default, since 2024), build as
the module's `mlflow-build` account instead: add `--service-account=projects/{settings.project}/serviceAccounts/`
`{settings.build_service_account_email}` to the command and give that account
`roles/storage.objectViewer` on the bucket gcloud uploads the source to (`{settings.staging_bucket_name}`, as
`mlflow-gcp up` does)."""
    return f"""# MLflow on Google Cloud, as Terraform

Written by `mlflow-gcp export terraform` for project `{settings.project}`: the same resources, names and security
properties as `mlflow-gcp up` (private-IP Cloud SQL, grants on each resource only, secrets by reference).

Requires Terraform 1.11 or newer, the `google` provider 6.50 or newer in 6.x, and credentials that may create these
resources (`gcloud auth application-default login`). `terraform.tfvars` holds this deployment's settings;
`variables.tf` lists the others with the tool's defaults.

## Commands

{commands}

{image_section}

{_fixed(settings)}

{passwords}

## After apply

`mlflow-gcp credentials --project {settings.project}` prints the login for the team; `mlflow-gcp status` checks
the deployment, whichever tool made it.
"""
