"""`mlflow-gcp status`: every resource of the deployment, its drift, and live checks of the server.

One line per resource that fits the terminal (80 columns and up), like `kubectl get`: a mark, a short name, the
one detail that matters, grants folded into the line of the resource they are on. `--wide` shows the step, the
full names and every detail; `--json` everything as data."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import typer

from mlflow_gcp.cli.console import bullets, debug, err, out
from mlflow_gcp.cli.options import SKIP_PREFLIGHT, WIDE, with_settings
from mlflow_gcp.cli.project import with_identity_flags
from mlflow_gcp.config import Settings

OK, MISSING, DRIFT, FAILED, UNKNOWN = "ok", "missing", "drift", "failed", "unknown"
KEPT = "kept"  # holds data and stays while the server is gone (after `down`)
DELETED = "deleted"  # the deployment's Cloud SQL instance, deleted by hand: `up` would make a NEW, EMPTY one
MARK_STYLE = {
    OK: "green",
    KEPT: "cyan",
    DELETED: "bold red",
    MISSING: "red",
    DRIFT: "yellow",
    FAILED: "bold red",
    UNKNOWN: "bold red",
}
SEVERITY = [OK, KEPT, DRIFT, MISSING, DELETED, UNKNOWN, FAILED]
# ResourceState.condition → mark (a resource that could not be read is `unknown`: it may well exist)
MARKS = {"ok": OK, "missing": MISSING, "drift": DRIFT, "failed": FAILED, "unreadable": UNKNOWN}
MARK_WIDTH = 7
NAME_WIDTH = 44  # leaves 27 columns of detail at 80
NOTHING_DEPLOYED = 3  # exit code of `status` on a project where no resource of the deployment exists


@with_settings(adopt=True, preflight={"checks": ("project",)})
def status(
    settings: Settings,
    resolution,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout, nothing else."),
    wide: bool = WIDE,
    skip_preflight: bool = SKIP_PREFLIGHT,
) -> None:
    """Show what exists, what differs from the configuration, and whether the server answers. Reads only.

    Exit code 0 when everything is present and healthy, 1 when something is missing, differs or fails, 3 when
    nothing is deployed in the project."""
    from mlflow_gcp.cli.left_behind_view import show_left_behind
    from mlflow_gcp.cli.preflight import preflight_or_exit
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.moves import check_same_region
    from mlflow_gcp.operate.status import collect_status
    from mlflow_gcp.operate.teardown import nothing_exists

    check_same_region(resolution, "status")
    clients = Clients(settings.project)
    preflight_or_exit(settings, clients, checks=("project",), skip=skip_preflight)
    if as_json:
        report = collect_status(settings, clients=clients, resolution=resolution)
        empty = nothing_exists(report.inventory)
        sys.stdout.write(json.dumps({**report.as_dict(), "deployed": not empty}, indent=2) + "\n")
        raise typer.Exit(NOTHING_DEPLOYED if empty else 0 if report.ok else 1)
    with err.status(f"Reading the deployment in {settings.project}...", spinner="dots"):
        report = collect_status(settings, clients=clients, resolution=resolution)
    empty = nothing_exists(report.inventory)
    if empty and not wide:
        out.print(
            f"Nothing is deployed in {settings.project} (region {settings.region}): run "
            + with_identity_flags(f"`mlflow-gcp up --project {settings.project}`"),
            soft_wrap=True,
            markup=False,
        )
        show_left_behind(out, report.left_behind, command="status")
        raise typer.Exit(NOTHING_DEPLOYED)
    if wide:
        _show_wide(report)
    else:
        _show(report)
    _show_settings(report, wide=wide)
    from mlflow_gcp.cli.backup import show_backups

    show_backups(report.backups)
    _show_server(report, wide=wide)
    show_left_behind(out, report.left_behind, command="status")
    _show_problems(report)
    raise typer.Exit(NOTHING_DEPLOYED if empty else 0 if report.ok else 1)


@dataclass
class Line:
    mark: str
    step: str
    name: str
    detail: str
    extra: list[str] = field(default_factory=list)  # folded grants, shown after the detail


def drift_detail(drift: tuple[str, ...]) -> str:
    """`drift: tier, labels`: the owned fields of a resource whose live value differs, as both views show them."""
    return "drift: " + ", ".join(drift)


def _worse(a: str, b: str) -> str:
    return max(a, b, key=SEVERITY.index)


def resource_lines(inventory, kept: set[str] = frozenset(), deleted: set[str] = frozenset()) -> list[Line]:
    """One line per resource, its grants folded in; a step that could not be read is one `failed` line. A `kept`
    resource (after `down`) is marked so, its grants (gone with the service account) not counted missing."""
    from mlflow_gcp.cli.names import key_detail, short_name, short_role

    lines: list[Line] = []
    by_target: dict[tuple[str, str], Line] = {}  # (step, resource label) → its line
    any_step: dict[str, Line] = {}
    grants = []
    for entry in inventory.steps:
        if entry.error is not None:
            lines.append(Line(FAILED, entry.step, f"{entry.step} step: unreadable", entry.error.message.split(". ")[0]))
        for item in entry.items:
            resource, state = item.resource, item.state
            if getattr(resource, "kind", "") == "grant" and hasattr(resource, "target"):
                grants.append((entry.step, item))
                continue
            if getattr(resource, "shown_by_owner", False):  # a secret made early; its owner's line shows it
                continue
            if state.unreadable:
                line = Line(UNKNOWN, entry.step, short_name(state.label), f"unreadable: {state.unreadable}")
            elif state.label in deleted:
                line = Line(DELETED, entry.step, short_name(state.label), "up makes a NEW, EMPTY one")
            elif not state.exists:
                line = Line(MISSING, entry.step, short_name(state.label), "")
            elif state.problem:
                line = Line(FAILED, entry.step, short_name(state.label), key_detail(resource.kind, state.details))
            elif state.drift:
                line = Line(DRIFT, entry.step, short_name(state.label), drift_detail(state.drift))
            else:
                mark = KEPT if state.label in kept else OK
                line = Line(mark, entry.step, short_name(state.label), key_detail(resource.kind, state.details))
            lines.append(line)
            for key in {state.label, f"{resource.kind} {getattr(resource, 'name', '')}"}:
                by_target[(entry.step, key)] = line
                any_step.setdefault(key, line)
    for step, item in grants:
        role = short_role(item.resource.role)
        line = by_target.get((step, item.resource.target)) or any_step.get(item.resource.target)
        if line is None:  # a grant on something that is not listed: a line of its own
            mark = OK if item.state.exists else MISSING
            lines.append(Line(mark, step, short_name(item.state.label), "" if item.state.exists else "not granted"))
        elif item.state.exists:
            line.extra.append(role)
        elif line.mark == KEPT:
            continue
        else:
            if line.mark == OK:
                line.detail = ""
            line.mark = _worse(line.mark, MISSING)
            line.extra.append(f"{role} not granted")
    return lines


def _row(mark: str, columns: list[tuple[str, int]], last: str, width: int) -> str:
    """A line of the display as Rich markup, never longer than `width`."""
    from rich.markup import escape

    from mlflow_gcp.cli.names import fit

    style = MARK_STYLE.get(mark, "")
    text = f"[{style}]{mark:<{MARK_WIDTH}}[/]" if style else f"{mark:<{MARK_WIDTH}}"
    used = MARK_WIDTH
    for value, size in columns:
        text += " " + escape(fit(value, size).ljust(size))
        used += size + 1
    return text + " " + escape(fit(last, max(width - used - 1, 0)))


def _show(report) -> None:
    from mlflow_gcp.cli.names import fit

    ctx = report.inventory.ctx
    lines = resource_lines(report.inventory, report.kept, report.deleted)
    width = max(out.width, 40)
    name_width = min(max((len(line.name) for line in lines), default=8), NAME_WIDTH)
    out.print(fit(f"Deployment in {ctx.project} ({ctx.region})", width), soft_wrap=True)
    header = _row("", [("RESOURCE", name_width)], "DETAIL", width)
    out.print(f"[dim]{header}[/]", soft_wrap=True)
    for line in lines:
        detail = ", ".join(part for part in [line.detail, *line.extra] if part)
        out.print(_row(line.mark, [(line.name, name_width)], detail, width), soft_wrap=True)


def _show_wide(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    ctx = report.inventory.ctx
    table = Table(title=f"Deployment in {ctx.project} ({ctx.region})", box=None, header_style="dim")
    for column in ("", "step", "resource", "details"):
        table.add_column(column, overflow="fold")
    for entry in report.inventory.steps:
        if entry.error is not None:
            mark = f"[{MARK_STYLE[FAILED]}]{FAILED}[/]"
            table.add_row(mark, entry.step, "(unreadable)", escape(entry.error.message))
        for item in entry.items:
            state = item.state
            mark = KEPT if state.label in report.kept else MARKS[state.condition]
            mark = DELETED if state.label in report.deleted else mark
            details = ", ".join(f"{key}: {value}" for key, value in state.details.items())
            if state.unreadable:
                details = f"unreadable: {state.unreadable}"
            if state.drift:
                details = drift_detail(state.drift) + (f"; {details}" if details else "")
            table.add_row(f"[{MARK_STYLE[mark]}]{mark}[/]", entry.step, escape(state.label), escape(details))
    out.print(table)


def _show_server(report, *, wide: bool) -> None:
    from rich.markup import escape

    from mlflow_gcp.cli.names import fit

    width = max(out.width, 40)
    if report.server is None:
        return
    out.print(fit(f"\nServer {report.url}", width + 1), soft_wrap=not wide)
    for check in report.server.checks:
        mark = OK if check.ok else FAILED
        answer = str(check.status) if check.status is not None else check.detail or "no answer"
        if check.status is not None and not check.ok:
            answer = f"{check.status}, expected {check.expected}"
        out.print(_row(mark, [(check.name, 16)], answer, width), soft_wrap=True)
        if check.error and debug.enabled:
            out.print(f"[dim]{escape(check.error)}[/]")
    _show_mlflow(report.mlflow, width)


def _show_mlflow(mlflow: dict | None, width: int) -> None:
    """The MLflow version the server runs (and the image's, when `up` would upgrade it), and each schema."""
    if not mlflow:
        return
    running = mlflow.get("running") or mlflow.get("server") or "unknown"
    image = mlflow.get("image")
    detail = running
    if image and image != running:
        detail += f"; `up` upgrades to {image}"
    out.print(_row(OK if not image or image == running else DRIFT, [("MLflow", 16)], detail, width), soft_wrap=True)
    for name in ("tracking", "auth"):
        schema, head = mlflow.get(f"{name}_schema"), mlflow.get(f"{name}_head")
        if schema is None and head is None:
            continue
        text = f"{schema or 'empty'}" + ("" if schema == head else f" (the server's MLflow expects {head})")
        out.print(_row(OK if schema == head else DRIFT, [(f"{name} schema", 16)], text, width), soft_wrap=True)


def _show_problems(report) -> None:
    from mlflow_gcp.operate import status as kinds

    if report.ok:
        out.print("[green]Everything is present, as configured, and the server answers.[/]")
        return
    out.print(f"\n[bold red]{len(report.problems)} problem(s):[/]")
    bullets(out, list(report.problems))
    settings = report.inventory.ctx.settings
    advice: list[str] = []
    if report.kinds & {kinds.MISSING, kinds.DRIFT}:
        advice.append("Run `mlflow-gcp up` to create what is missing and reset what differs.")
    if kinds.BROKEN in report.kinds:
        advice += sorted({i.state.problem_hint for _, i in report.inventory.items() if i.state.problem_hint})
    if kinds.UNREADABLE in report.kinds:
        hints = {e.error.hint for e in report.inventory.steps if e.error is not None and e.error.hint}
        advice += sorted(hints) or ["Some parts could not be read: see the errors above."]
    urls: list[str] = []
    if kinds.DATABASE_REFUSED in report.kinds:
        advice.append(
            "Run `mlflow-gcp credentials rotate --database`: it gives the MySQL user a new password and rolls out "
            "the server with it (`mlflow-gcp up` alone keeps the recorded password)."
        )
    if kinds.UNHEALTHY in report.kinds:
        advice.append(
            f"The server answers but not as it should; its logs say why: `gcloud run services logs read "
            f"{settings.service} --region {settings.region} --project {settings.project}`, or in the Cloud Console:"
        )
        urls.append(
            f"https://console.cloud.google.com/run/detail/{settings.region}/{settings.service}/logs"
            f"?project={settings.project}"
        )
    if kinds.UNREACHABLE in report.kinds:
        advice.append(
            f"The server does not answer from this machine: check the network (DNS, proxy, VPN, firewall) "
            f"between here and {report.url}, then run `mlflow-gcp status` again."
        )
    if not advice:
        advice.append("Run `mlflow-gcp up` to create or fix what is missing or differs.")
    out.print("[bold]What to do:[/]")
    bullets(out, advice)
    for url in urls:  # whole, on its own line, so that it stays clickable
        out.print(f"    {url}", soft_wrap=True, markup=False)


def _show_settings(report, *, wide: bool) -> None:
    """The deployment's settings: value and where it comes from (recorded, a flag, adopted...), the live value
    where it differs. Compact: only those not at their default or drifting; --wide: all."""
    from mlflow_gcp.config import setting_fields

    settings = report.settings
    if settings is None:
        return
    width = max(out.width, 40)
    defaults = {f.name: f.default for f in setting_fields()}
    version = settings["record_version"]
    title = f"Settings recorded with the deployment (version {version})" if version else "Settings (not recorded yet)"
    out.print(f"\n{title}", soft_wrap=True)
    shown = 0
    for name, entry in settings["values"].items():
        drifting = name in settings["drift"]
        if not (wide or drifting or entry["value"] != defaults.get(name)):
            continue
        shown += 1
        detail = f"{entry['value']} ({entry['source']})"
        if drifting:
            detail = f"live: {entry['live']}; {detail}"
        out.print(_row(DRIFT if drifting else OK, [(name.replace("_", "-"), 23)], detail, width), soft_wrap=True)
    if not wide:
        rest = len(settings["values"]) - shown
        out.print(f"[dim]{rest} other setting(s) at their default; --wide lists them all.[/]", soft_wrap=True)
    if not version:
        next_up = with_identity_flags("The next `mlflow-gcp up` records these settings")
        out.print(f"{next_up}; flags then change only what they name.")
