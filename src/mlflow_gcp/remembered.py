"""Remembered settings: what `up` applied is recorded with the deployment, and later runs start from it.

Where: a Secret Manager secret `mlflow-gcp-settings` in the project, one JSON document per version. It lives
with the deployment (a teammate on another machine, or CI, reads the same one), it is versioned (the history of
changes is `gcloud secrets versions list mlflow-gcp-settings`), it needs no API beyond the ones the tool uses,
and the server's service account is granted nothing on it: only people who run the tool read it. It is not
inside `mlflow-env` because the server reads that one (every settings change would roll out a revision and the
server would see the tool's settings), and labels cannot hold values such as `10.8.0.0/28`. `down` keeps it
with the data (the kept database has the recorded tier) and deletes it with --delete-data.

How a run's settings are resolved, per field of the Settings dataclass (so settings added later are covered):
a flag or an environment variable (including `.env`) > `--reset NAME` (the default) > the recorded value > for a
deployment made before this or by hand, the value its live resources have (adoption) > the default. The record
is written by the `settings` step, after the service is deployed: a change is recorded once applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp import __version__
from mlflow_gcp.config import Settings, env_var, flag, setting_fields, validate
from mlflow_gcp.errors import ConfigError, MlflowGcpError

SETTINGS_SECRET = "mlflow-gcp-settings"
FORMAT = 1
# The project is where the record is looked for, so it is never taken from it.
NOT_RECORDED = ("project",)
# The steps whose resources say what they were made with (Resource.observed), read to adopt a deployment.
OBSERVED_STEPS = ("database", "connector", "deploy")

FLAG, ENVIRONMENT, RESET, RECORDED, ADOPTED, DEFAULT = "flag", "environment", "reset", "recorded", "adopted", "default"


def recorded_names() -> list[str]:
    return [f.name for f in setting_fields() if f.name not in NOT_RECORDED]


def document(settings: Settings) -> str:
    values = {name: getattr(settings, name) for name in recorded_names()}
    return json.dumps({"format": FORMAT, "written_by": f"mlflow-gcp {__version__}", "settings": values}, indent=2)


def parse(text: str, version: str = "latest") -> dict[str, Any]:
    """The recorded values of known settings, typed as the dataclass says. Unknown names (a newer tool's, or
    removed settings) are ignored; a value of the wrong type is a clear error."""
    try:
        values = json.loads(text)["settings"]
        if not isinstance(values, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError) as e:
        raise MlflowGcpError(
            f"Version {version} of the secret {SETTINGS_SECRET} (the settings recorded with the deployment) is not a "
            "settings document. Nothing was changed: the tool does not fall back to default names.",
            f"Add a corrected version (`gcloud secrets versions add {SETTINGS_SECRET} --data-file=FILE`; an earlier "
            f"version is `gcloud secrets versions access N --secret {SETTINGS_SECRET}`), then run the command again.",
        ) from e
    types = {f.name: f.type for f in setting_fields()}
    out: dict[str, Any] = {}
    for name in recorded_names():
        if name not in values:
            continue
        value = values[name]
        wanted = int if types[name] in (int, "int") else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise MlflowGcpError(
                f"The setting {name} recorded in the secret {SETTINGS_SECRET} is {value!r}, not a {wanted.__name__}.",
                f"Run `mlflow-gcp up {flag(name)} VALUE` to record a good value.",
            )
        out[name] = value
    return out


@dataclass(frozen=True)
class Record:
    values: dict[str, Any]
    version: str


def read_record(clients, project: str) -> Record | None:
    """The newest recorded settings, read by version number, or None: no record yet (no secret, or a secret with
    no version: a first run stopped between the two), or Secret Manager not enabled yet (a new project).

    Never through `latest`: that alias is eventually consistent and may answer the version before the newest
    (https://cloud.google.com/secret-manager/docs/reference/consistency), which would send a setting back and
    forth. The list of versions is eventually consistent too, so the numbers above the newest listed are read one
    by one (a read by number is strongly consistent) until one does not exist. A newest version that is disabled
    or destroyed is an error that says how to recover: the settings are never guessed from an older version or
    from the defaults."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp import retry
    from mlflow_gcp.gcp.errors import translate

    path = f"projects/{project}/secrets/{SETTINGS_SECRET}"
    client = clients.secrets()
    try:
        listed = retry.call(lambda: list(client.list_secret_versions(request={"parent": path})))
        states = {int(v.name.rsplit("/", 1)[-1]): v.state.name for v in listed}
        number = max(states, default=0) + 1
        while True:
            try:
                name = f"{path}/versions/{number}"
                version = retry.call(lambda name=name: client.get_secret_version(name=name))
            except gexc.NotFound:
                break
            states[number] = version.state.name
            number += 1
        if not states:
            return None
        newest = max(states)
        if states[newest] != "ENABLED":
            raise record_unreadable(project, newest, states)
        response = retry.call(lambda: client.access_secret_version(name=f"{path}/versions/{newest}"))
    except gexc.NotFound:
        return None  # no secret: nothing recorded (a deployment without one is recognised from its resources)
    except gexc.GoogleAPICallError as e:
        if retry.is_service_activating(e):
            return None
        raise translate(e, f"reading the recorded settings ({SETTINGS_SECRET})", project) from e
    from mlflow_gcp.resources.secret import decode_payload

    text = decode_payload(SETTINGS_SECRET, str(newest), response.payload.data)
    return Record(parse(text, str(newest)), str(newest))


def record_unreadable(project: str, newest: int, states: Mapping[int, str]) -> MlflowGcpError:
    """The newest version of the record is disabled or destroyed: how to get the deployment's settings back."""
    state = states[newest].lower()
    older = sorted((n for n, s in states.items() if s == "ENABLED"), reverse=True)
    secret = f"--secret {SETTINGS_SECRET} --project {project}"
    if state == "disabled":
        hint = f"Enable it again (`gcloud secrets versions enable {newest} {secret}`) and run the command again."
    elif older:
        hint = (
            f"If version {older[0]} still describes the live deployment, add it back as the newest "
            f"(`gcloud secrets versions access {older[0]} {secret} | gcloud secrets versions add {SETTINGS_SECRET} "
            f"--project {project} --data-file=-`); otherwise add a corrected version the same way."
        )
    else:
        hint = (
            f"Delete the secret (`gcloud secrets delete {SETTINGS_SECRET} --project {project}`) and run `up` with the "
            "deployment's names as flags (--db-instance, --bucket, --service...): it is recognised from its "
            "resources and the record is written again."
        )
    return MlflowGcpError(
        f"The newest version ({newest}) of the secret {SETTINGS_SECRET}, the settings recorded with the deployment, "
        f"is {state}: the tool does not guess the deployment's settings from an older version or from the "
        "defaults (that could build a second, empty deployment). Nothing was changed.",
        hint,
    )


@dataclass(frozen=True)
class Resolution:
    """The settings of this run and where each value came from."""

    settings: Settings
    sources: dict[str, str]
    record: Record | None = None
    adopted: dict[str, Any] = field(default_factory=dict)

    def changed_from_record(self) -> dict[str, tuple[Any, Any]]:
        """Recorded values this run changes: name -> (recorded, new)."""
        if self.record is None:
            return {}
        return {
            name: (self.record.values[name], getattr(self.settings, name))
            for name in recorded_names()
            if name in self.record.values and self.record.values[name] != getattr(self.settings, name)
        }

    def as_dict(self, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
        live = live or {}
        return {
            "recorded": self.record is not None,
            "record_version": self.record.version if self.record else None,
            "values": {
                name: {
                    "value": getattr(self.settings, name),
                    "source": self.sources[name],
                    "recorded": self.record.values.get(name) if self.record else None,
                    **({"live": live[name]} if name in live else {}),
                }
                for name in recorded_names()
            },
            "drift": sorted(drift(self.settings, live)),
        }


def drift(settings: Settings, live: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings whose live value differs: name -> (setting, live)."""
    return {name: (getattr(settings, name), v) for name, v in live.items() if getattr(settings, name) != v}


def reset_names(raw: Iterable[str]) -> set[str]:
    """`--reset db-tier`, `--reset DB_TIER`, `--reset --db-tier` or `--reset all` -> setting names. `all` resets
    settings, never the names of the deployment's resources (`moves.IDENTITY`): those only by name."""
    from mlflow_gcp.moves import IDENTITY

    known = recorded_names()
    names: set[str] = set()
    bad: list[str] = []
    for item in raw:
        for part in item.split(","):
            name = part.strip().lstrip("-").replace("-", "_").lower()
            if not name:
                continue
            if name == "all":
                names.update(n for n in known if n not in IDENTITY)
            elif name in known:
                names.add(name)
            else:
                bad.append(part.strip())
    if bad:
        from mlflow_gcp.suggest import closest

        flags = [n.replace("_", "-") for n in known]
        guess = closest(bad[0].lstrip("-").replace("_", "-"), flags)
        if guess:
            raise ConfigError(
                f"--reset {', '.join(bad)}: not a setting that can be reset. Did you mean --reset {guess}?",
                "`mlflow-gcp up --help` lists the settings (--reset all resets every one).",
            )
        raise ConfigError(
            f"--reset {', '.join(bad)}: not a setting that can be reset. Settings: " + ", ".join(flags) + " (or all)."
        )
    return names


def observe_live(settings: Settings, clients) -> dict[str, Any]:
    """The settings the live resources embody (Resource.observed), read without changing anything."""
    from mlflow_gcp.operate.inventory import read_inventory
    from mlflow_gcp.steps import BY_NAME

    inventory = read_inventory(settings, clients=clients, steps=[BY_NAME[s] for s in OBSERVED_STEPS])
    return inventory.observed_settings()


def resolve(
    given: Mapping[str, Any],
    explicit: Mapping[str, str],
    resets: Iterable[str] = (),
    *,
    clients=None,
    adopt: bool = True,
    read: bool = True,
) -> Resolution:
    """The settings of a run. `given` holds every field (defaults where nothing was given), `explicit` the
    names given as a flag or environment variable with that source, `resets` the names `--reset` sends back to
    their default. `adopt` reads the live resources for values neither given nor recorded; without `read`, nothing
    is read (offline): given values and defaults only."""
    from mlflow_gcp.gcp.clients import Clients

    reset = reset_names(resets)
    both = sorted(reset & set(explicit))
    if both:
        raise ConfigError(f"{', '.join(flag(n) for n in both)} is both given and reset: choose one.")
    # Every value given is checked on its own before any request; rules between two settings once all are known.
    validate(Settings(**given), combinations=False)
    clients = clients or Clients(given["project"])
    record = read_record(clients, given["project"]) if read else None
    adopt = adopt and read
    defaults = {f.name: f.default for f in setting_fields()}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in defaults:
        if name in explicit:
            values[name], sources[name] = given[name], explicit[name]
        elif name in reset:
            values[name], sources[name] = defaults[name], RESET
        elif record is not None and name in record.values:
            values[name], sources[name] = record.values[name], RECORDED
        else:
            values[name], sources[name] = given[name], DEFAULT
    if read and record is None:
        from mlflow_gcp.recognise import check_recognised

        check_recognised(Settings(**values), clients)
    adopted: dict[str, Any] = {}
    open_names = [n for n, source in sources.items() if source == DEFAULT and n not in NOT_RECORDED]
    if adopt and open_names:
        live = observe_live(Settings(**values), clients)
        adopted = {n: live[n] for n in open_names if n in live}
        values.update(adopted)
        sources.update(dict.fromkeys(adopted, ADOPTED))
    try:
        settings = validate(Settings(**values))
    except ConfigError as e:
        from_elsewhere = sorted(n for n, s in sources.items() if s in (RECORDED, ADOPTED))
        if not from_elsewhere:
            raise
        raise ConfigError(
            e.message,
            "Some values come from the settings recorded with the deployment or from its live resources "
            "(`mlflow-gcp status` lists them): give the setting as a flag to change it, or `up --reset NAME` "
            "for its default.",
        ) from e
    return Resolution(settings, sources, record, adopted)


def explicit_sources(ctx, names: Iterable[str]) -> dict[str, str]:
    """The settings given on the command line or in the environment (`.env` included), from the command's
    (Typer's) click context."""
    found = {}
    for name in names:
        source = getattr(ctx.get_parameter_source(name), "name", "")
        if source == "COMMANDLINE":
            found[name] = FLAG
        elif source == "ENVIRONMENT":
            found[name] = ENVIRONMENT
    return found


def describe_source(name: str, source: str) -> str:
    return {FLAG: flag(name), ENVIRONMENT: env_var(name)}.get(source, source)
