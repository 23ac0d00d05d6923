"""`mlflow-gcp export terraform [DIR]`: the deployment as a Terraform module."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError

app = typer.Typer(
    cls=PanelGroup,help="Write the deployment in another tool's format.", no_args_is_help=True)


@app.command("terraform", cls=PanelCommand)
@with_settings
def terraform(
    settings: Settings,
    directory: Path = typer.Argument(Path("mlflow-terraform"), help="Where to write the module."),
    with_imports: bool = typer.Option(
        False,
        "--import",
        help="Adopt the existing deployment: also write import blocks (reads the running service's secret versions).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the module's files if DIR already holds them (the whole set the export writes)."
    ),
) -> None:
    """Write a Terraform module of the same deployment as `up` (versions.tf, variables.tf, main.tf, outputs.tf,
    terraform.tfvars, README.md, .gitignore and the server's build context)."""
    from mlflow_gcp import build_context
    from mlflow_gcp.terraform.module import OWNED_FILES, build_module
    from mlflow_gcp.terraform.readme import BUILD_CONTEXT_DIR

    adopt = None
    if with_imports:
        from mlflow_gcp.terraform.live import read_live_deployment

        adopt = read_live_deployment(settings)
    context = build_context.container_dir()
    module = build_module(
        settings,
        image_tag=build_context.image_tag(context, settings.mlflow_version),
        adopt=adopt,
        with_imports=with_imports,
    )
    owned = [*OWNED_FILES, BUILD_CONTEXT_DIR]
    existing = [name for name in owned if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{directory} already holds {', '.join(existing)}; nothing was written. "
            "Pass --force to replace the module's files (every file the export writes, and no other), or choose "
            "another directory."
        )
    directory.mkdir(parents=True, exist_ok=True)
    # --force replaces the whole set: a file of the other mode (imports.tf) or of an older build context must
    # not stay beside the new module.
    for name in OWNED_FILES:
        if name not in module.files and (directory / name).is_file():
            (directory / name).unlink()
    shutil.rmtree(directory / BUILD_CONTEXT_DIR, ignore_errors=True)
    for name, content in module.files.items():
        (directory / name).write_text(content, encoding="utf-8")
    for relative in build_context.context_files(context):
        target = directory / BUILD_CONTEXT_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((context / relative).read_bytes())
    # The `mlflow-version` setting: the copy pins that MLflow, so `gcloud builds submit --tag` (no build arguments)
    # builds the image `up` would, under the tag `up` gives it.
    requirements = build_context.requirements_for(context, settings.mlflow_version)
    if requirements is not None:
        (directory / BUILD_CONTEXT_DIR / "requirements.txt").write_text(requirements, encoding="utf-8")
    out.print(f"Wrote the Terraform module to {directory}/ ({', '.join(module.files)}, {BUILD_CONTEXT_DIR}/).")
    err.print(f"Next: cd {directory} && terraform init && terraform plan   (see {directory}/README.md)")
