"""mlflow-gcp: a secured MLflow tracking server on Google Cloud with one command."""

__version__ = "0.1.0"
