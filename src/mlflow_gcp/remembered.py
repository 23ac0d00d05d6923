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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.config import Settings, env_var, flag, setting_fields, validate
from mlflow_gcp.errors import ConfigError
from mlflow_gcp.resources.settings_record import Record, read_record
from mlflow_gcp.settings_document import NOT_RECORDED, recorded_names

# The steps whose resources say what they were made with (Resource.observed), read to adopt a deployment.
OBSERVED_STEPS = ("database", "connector", "deploy")

FLAG, ENVIRONMENT, RESET, RECORDED, ADOPTED, DEFAULT = "flag", "environment", "reset", "recorded", "adopted", "default"


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
    from mlflow_gcp.inventory import read_inventory
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
