"""`mlflow-gcp cost`: what the deployment costs per month, from Google's price catalog or a shipped table."""
