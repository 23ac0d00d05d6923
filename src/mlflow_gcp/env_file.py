"""The `.env` file of the working directory, and MLFLOW_GCP_* names that are no setting (typos).

Windows editors often save text as UTF-16 with a byte order mark (PowerShell 5's `>` and `Out-File`, Notepad's
"Unicode"), or UTF-8 with one. A BOM names its encoding without doubt, so such a file is read as what it says;
anything else must be UTF-8, or the user gets one paragraph that says how to re-save it.
"""

from __future__ import annotations

import codecs
import difflib
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlflow_gcp.errors import ConfigError

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# MLFLOW_GCP_* variables that are not settings: the emulator endpoint, --debug, and knobs of tests and CI.
OTHER_VARIABLES = frozenset(
    {
        "MLFLOW_GCP_API_ENDPOINT",
        "MLFLOW_GCP_DEBUG",
        "MLFLOW_GCP_CONTAINER_DIR",
        "MLFLOW_GCP_DATABASE_WAIT_SECONDS",
        "MLFLOW_GCP_LOGIN_TIMEOUT",
        "MLFLOW_GCP_MAINTENANCE",
        "MLFLOW_GCP_LOGS_POLL_SECONDS",
        "MLFLOW_GCP_POLL_MIN",
        "MLFLOW_GCP_RETRY_DELAY",
        "MLFLOW_GCP_SERVICE_URLS",
        "MLFLOW_GCP_SIGNING_SERVICE_ACCOUNT",
        "MLFLOW_GCP_WAIT_SCALE",
    }
)


def decode(path: Path, raw: bytes) -> str:
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(encoding)
        problem = ""
    except UnicodeDecodeError as e:
        text, problem = "", f"byte {e.start + 1} cannot be read as {encoding}"
    if "\x00" in text:  # UTF-16 without a byte order mark decodes as "UTF-8" with a NUL between letters
        problem = "it holds NUL bytes, as UTF-16 text without a byte order mark does"
    if problem:
        raise ConfigError(
            f"The settings file {path} is not UTF-8 text ({problem}), so its settings cannot be read.",
            "Save it as UTF-8 (Notepad: File > Save as, Encoding: UTF-8; PowerShell: "
            "`Get-Content .env | Set-Content -Encoding utf8 .env.new`, then rename it), or delete it and pass the "
            "settings as flags.",
        )
    return text


class Applied:
    """What the last `load` put in the environment: the file, and the names it set (those not already set)."""

    path: Path | None = None
    names: frozenset[str] = frozenset()


applied = Applied()


def check_syntax(path: Path, text: str) -> None:
    """One paragraph naming the file and the first line python-dotenv cannot parse (it would only log a warning
    and drop the line). The line's value is not quoted: a `.env` may hold a password."""
    from dotenv.parser import parse_stream

    bad = next((binding for binding in parse_stream(io.StringIO(text)) if binding.error), None)
    if bad is None:
        return
    first = bad.original.string.splitlines()[0] if bad.original.string else ""
    name = first.split("=", 1)[0].strip() if "=" in first else ""
    shown = f" ({name}=...)" if name and name.replace("_", "").replace("export ", "").isalnum() else ""
    raise ConfigError(
        f"The settings file {path} cannot be read at line {bad.original.line}{shown}: each line must be "
        "NAME=value (a value with spaces or # inside quotes, every quote closed), a comment starting with #, or "
        "empty.",
        "Correct that line, or move the file away and pass the settings as flags.",
    )


def load(path: Path) -> dict[str, str]:
    """Put the file's variables in the environment, below those already set there (flags win over both).
    Returns the file's variables; {} when there is no file."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    text = decode(path, path.read_bytes())
    check_syntax(path, text)
    values = dotenv_values(stream=io.StringIO(text))
    found = {key: value for key, value in values.items() if value is not None}
    applied.path = path
    applied.names = frozenset(key for key in found if key not in os.environ)
    for key, value in found.items():
        os.environ.setdefault(key, value)
    return found


def setting_variables() -> list[str]:
    from mlflow_gcp.config import env_var, setting_fields

    return [env_var(f.name) for f in setting_fields()]


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """(name, closest setting variable or None) for each MLFLOW_GCP_* name that is neither a setting nor one of
    OTHER_VARIABLES."""
    from mlflow_gcp.config import ENV_PREFIX

    settings = setting_variables()
    known = set(settings) | OTHER_VARIABLES
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in settings}
    unknown = []
    for name in sorted(set(names)):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(suffixes), n=1, cutoff=0.5)
            unknown.append((name, suffixes[close[0]] if close else None))
    return unknown


def warnings(from_file: Mapping[str, str], environment: Mapping[str, str]) -> list[str]:
    names = [name for name in [*from_file, *environment] if name.startswith("MLFLOW_GCP_")]
    if not set(names) - OTHER_VARIABLES:
        return []  # without reading the settings' declarations (start-up)
    messages = []
    for name, close in unknown_variables(names):
        where = "in .env" if name in from_file else "in the environment"
        guess = f"did you mean {close}?" if close else "see `mlflow-gcp up --help` for the settings."
        messages.append(f"{name} ({where}) is not a setting of mlflow-gcp and is ignored: {guess}")
    return messages
