"""The README.md written beside the exported module."""

from __future__ import annotations

from mlflow_gcp.config import Settings

BUILD_CONTEXT_DIR = "server-image"


def module_readme(settings: Settings, image: str, *, adopted: bool) -> str:
    adoption = (
        """## Adopting the existing deployment

`imports.tf` names every resource that exists today by its import ID (Terraform 1.5+ `import` blocks).
`terraform plan` must show them as *to import* and nothing to create or replace; stop if it shows otherwise.
The secret versions (the passwords) stay outside Terraform: the service pins the versions it runs with today
(`secret_versions` in variables.tf), and `mlflow-gcp credentials rotate` keeps rotating them. After a rotation,
update `secret_versions` to the versions `mlflow-gcp status` shows.
"""
        if adopted
        else """## Passwords

`random_password` makes the MySQL and MLflow admin passwords and the server's session key, and Terraform writes
them to Secret Manager (`mysql-credentials` as `user:password`, `mlflow-credentials` as `login:password`).
**They then live in the Terraform state in plain text**: keep the state in a bucket that only the
administrators of the deployment can read, with object versioning on, for example:

```hcl
terraform {
  backend "gcs" {
    bucket = "YOUR_PROJECT-terraform-state"  # gcloud storage buckets create ... --uniform-bucket-level-access
    prefix = "mlflow"                        # gcloud storage buckets update ... --versioning
  }
}
```
"""
    )
    return f"""# MLflow on Google Cloud, as Terraform

Written by `mlflow-gcp export terraform` for project `{settings.project}`: the same resources, names and security
properties as `mlflow-gcp up` (private-IP Cloud SQL, grants on each resource only, secrets by reference).

## Commands

```bash
terraform init
terraform plan -out plan.tfplan
terraform apply plan.tfplan
terraform output url
```

Requires Terraform 1.5 or newer and credentials that may create these resources
(`gcloud auth application-default login`). `terraform.tfvars` holds this deployment's settings; `variables.tf`
lists every setting with the tool's defaults.

## The server image

The service runs `{image}`. `mlflow-gcp up` builds it from the tool's `container/` directory, copied here as
`{BUILD_CONTEXT_DIR}/` (its tag is the hash of that directory). To build it without the tool, once the
Artifact Registry repository exists:

```bash
terraform apply -target=google_artifact_registry_repository.mlflow
gcloud builds submit {BUILD_CONTEXT_DIR} --project {settings.project} --region {settings.region} \\
  --tag {image}
```

In organisations where Cloud Build's default account holds no role (secure by default, since 2024), build as
the module's `mlflow-build` account instead: add `--service-account=projects/{settings.project}/serviceAccounts/`
`{settings.build_service_account_email}` to the command and give that account
`roles/storage.objectViewer` on the bucket gcloud uploads the source to (as `mlflow-gcp up` does).

Or set `image` to an image of your own.

{adoption}
## After apply

`mlflow-gcp credentials --project {settings.project}` prints the login for the team; `mlflow-gcp status` checks
the deployment, whichever tool made it.
"""
