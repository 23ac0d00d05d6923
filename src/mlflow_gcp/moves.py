"""Changes of a data-bearing resource's identity on a live deployment (issue 20).

A setting that names a resource holding data (the Cloud SQL instance, its databases, the bucket, the network,
the service, the region) does not rename anything when it changes: `up` builds a NEW, EMPTY resource under the
new name and moves the server onto it, while the old one keeps the data and keeps billing. So such a change is
said as what it is and needs a confirmation made for it (`--move-to-new-resources`, or a question on a
terminal); `--yes` only accepts restarts. A region change is refused outright: nothing moves region in place, and
half a deployment built in another region costs money (a connector's VMs) and then fails on the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_gcp.config import Settings, flag
from mlflow_gcp.errors import ChangeNotAcceptedError, ConfigError

# The settings that name a resource holding data or reached by its users, in the order a plan says them.
IDENTITY = ("region", "network", "db_instance", "db_name", "auth_db_name", "bucket", "service")
MOVE_FLAG = "--move-to-new-resources"


@dataclass(frozen=True)
class Move:
    name: str  # the setting
    old: str
    new: str
    what: str  # "the server moves to a NEW, EMPTY database ...; `old` keeps the data and keeps billing"


def _describe(name: str, old: str, new: str, settings: Settings) -> str:
    instance = settings.db_instance
    return {
        "db_instance": f"the server moves to a NEW, EMPTY Cloud SQL instance `{new}`; `{old}` keeps the data "
        "(runs, users) and keeps billing",
        "db_name": f"the server moves to a NEW, EMPTY database `{new}` on `{instance}`; `{old}` keeps the runs",
        "auth_db_name": f"the server moves to a NEW, EMPTY users database `{new}` on `{instance}`; `{old}` keeps "
        "the users and their permissions",
        "bucket": f"new artifacts go to a NEW, EMPTY bucket `{new}`; `{old}` keeps the artifacts logged so far "
        "(the runs still point there) and keeps billing",
        "network": f"the server and its database move to the network `{new}`, which Cloud SQL cannot do in place; "
        f"`{old}` keeps the deployment's network resources",
        "service": f"a NEW Cloud Run service `{new}` (another URL) is deployed; `{old}` keeps serving at its URL and "
        "keeps billing",
    }[name]


def _value(settings: Settings, name: str) -> str:
    return settings.bucket_name if name == "bucket" else str(getattr(settings, name))


def planned_moves(resolution) -> list[Move]:
    """The identity settings this run changes from the recorded (deployed) ones. No record: nothing is live (a
    deployment without one is recognised from its resources before this, see `remembered.resolve`)."""
    record = resolution.record
    if record is None:
        return []
    settings = resolution.settings
    old_settings = Settings(**{**_fields(settings), **{n: record.values[n] for n in IDENTITY if n in record.values}})
    moves = []
    for name in IDENTITY:
        if name not in record.values:
            continue
        old, new = _value(old_settings, name), _value(settings, name)
        if old != new:
            what = "" if name == "region" else _describe(name, old, new, settings)
            moves.append(Move(name, old, new, what))
    return moves


def _fields(settings: Settings) -> dict:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def recorded_data_resources(resolution) -> set[str]:
    """Labels of the Cloud SQL instance and bucket a deployed run (one with a record) made under the same names as
    this run's: when this run creates one of them, it had been deleted, and the new one is empty."""
    record = resolution.record
    if record is None:
        return set()
    settings = resolution.settings
    found = set()
    if record.values.get("db_instance", settings.db_instance) == settings.db_instance:
        found.add(f"Cloud SQL instance {settings.db_instance}")
    if record.values.get("bucket", settings.bucket) == settings.bucket:
        found.add(f"bucket {settings.bucket_name}")
    return found


def region_refusal(move: Move) -> ConfigError:
    return ConfigError(
        f"The deployment is in {move.old} (recorded in mlflow-gcp-settings); --region {move.new} would build a "
        f"second, empty one in {move.new} (database, connector, bucket, service), since nothing moves region in "
        "place. Nothing was sent.",
        f"Run without --region (or with --region {move.old}, and without --reset region) to keep it where it is. "
        f"To move: export the runs and artifacts, `mlflow-gcp down --delete-data` in {move.old}, then `mlflow-gcp "
        f"up --region {move.new}` and import them.",
    )


def check_same_region(resolution, command: str) -> None:
    """`status` and `down` with another region than the recorded one: say where the deployment is, rather than
    list (or delete) nothing as missing there."""
    region = next((m for m in planned_moves(resolution) if m.name == "region"), None)
    if region is None:
        return
    project = resolution.settings.project
    raise ConfigError(
        f"The deployment is in {region.old} (recorded in mlflow-gcp-settings), not in {region.new}: "
        f"`mlflow-gcp {command}` reads and deletes only the deployment where it is. Nothing was read in "
        f"{region.new} and nothing was changed.",
        f"Run `mlflow-gcp {command}` without --region (or with --region {region.old}). A connector an earlier "
        f"version left in {region.new} is listed by `gcloud compute networks vpc-access connectors list --region "
        f"{region.new} --project {project}` and deleted with `gcloud compute networks vpc-access connectors delete "
        f"NAME --region {region.new} --project {project}`.",
    )


def check(resolution, *, accepted: bool, dry_run: bool, show, ask=None) -> None:
    """Say every move this run makes (on `show`, a console) and refuse it unless accepted: `accepted` (the flag),
    else `ask(question)` on a terminal, else an error naming the flag. A region change is refused even then.
    A dry run says the moves and goes on."""
    from rich.markup import escape

    moves = planned_moves(resolution)
    for move in moves:
        if move.name == "region":
            raise region_refusal(move)
    for move in moves:
        show.print(f"[bold red]![/] {flag(move.name)} {escape(move.old)} -> {escape(move.new)}: {escape(move.what)}.")
    if not moves or dry_run or accepted:
        return
    names = ", ".join(f"{flag(m.name)} {m.new}" for m in moves)
    if ask is not None and ask(f"Move the server to the NEW, EMPTY resources ({names})?"):
        return
    raise ChangeNotAcceptedError(
        f"{names} moves the live server to new, empty resources; the old ones keep the data and keep billing. "
        "Nothing was sent.",
        f"To keep the deployment, run without it (`mlflow-gcp status` lists the recorded names). To move on purpose, "
        f"run again with {MOVE_FLAG} (--yes does not accept this); the old resources are then yours to delete.",
    )
