"""Server-side code of the mlflow-gcp container: configuration, database preparation, GCS signing.

Standalone on purpose: the image holds only `container/`, not the `mlflow_gcp` deploy tool.
"""
