"""`mlflow-gcp export terraform`: the same deployment as a Terraform module."""
