"""Preflight: what would make a command fail, found before it changes anything (checks), the permissions each
step needs (permissions) and the organization policies known to block a deployment (org_policies)."""

from mlflow_gcp.preflight.checks import ERROR, WARNING, Finding, PreflightReport, run_preflight

__all__ = ["ERROR", "WARNING", "Finding", "PreflightReport", "run_preflight"]
