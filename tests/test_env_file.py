"""The `.env` file as Windows tools save it (UTF-16 or UTF-8 with a byte order mark) is read; a file in another
encoding is one paragraph and exit 2, never a traceback; an MLFLOW_GCP_* name that is no setting (a typo) is
warned about with the closest setting. Run as a user runs it: `python -m mlflow_gcp` in the .env's folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_gcp.config import ENV_PREFIX
from mlflow_gcp.env_file import OTHER_VARIABLES, setting_variables

SRC = Path(__file__).resolve().parent.parent / "src"


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "mlflow_gcp", *args],
        cwd=tmp_path,
        # Wide lines: the messages quote tmp_path, whose length would otherwise decide where they wrap.
        env={**clean, "COLUMNS": "500", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# A project id that fails validation proves the file was read: the error quotes it.
SETTINGS = "# written on Windows\nMLFLOW_GCP_PROJECT=Bad_Project\nMLFLOW_GCP_REGION=europe-west9\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_a_dotenv_saved_with_a_byte_order_mark_is_read(tmp_path, encoding):
    raw = SETTINGS.encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw  # Python's utf-16-be codec writes no mark
    (tmp_path / ".env").write_bytes(raw)
    result = run(tmp_path, "status")
    assert result.returncode == 2, result.stderr
    assert "Project id 'Bad_Project' is not valid" in result.stderr
    assert "Traceback" not in result.stderr and "is not a setting" not in result.stderr


@pytest.mark.parametrize(
    "raw",
    [SETTINGS.encode("utf-16-le"), "MLFLOW_GCP_PROJECT=café-project\n".encode("latin-1")],
    ids=["utf16-no-bom", "latin1"],
)
def test_a_dotenv_in_another_encoding_is_one_paragraph_and_exit_2(tmp_path, raw):
    (tmp_path / ".env").write_bytes(raw)
    result = run(tmp_path, "status")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "is not UTF-8" in result.stderr and "Save it as UTF-8" in result.stderr
    assert result.stdout == ""


def test_an_unknown_setting_is_named_with_the_closest_one(tmp_path):
    (tmp_path / ".env").write_text("MLFLOW_GCP_PROJET=demo-project\n")
    result = run(tmp_path, "--version", env={"MLFLOW_GCP_REGOIN": "europe-west9", "MLFLOW_GCP_ZZZQQQ": "1"})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert (
        "MLFLOW_GCP_PROJET (in .env) is not a setting of mlflow-gcp and is ignored: did you mean MLFLOW_GCP_PROJECT?"
    ) in text
    assert "MLFLOW_GCP_REGOIN (in the environment) is not a setting" in text
    assert "did you mean MLFLOW_GCP_REGION?" in text
    assert "MLFLOW_GCP_ZZZQQQ (in the environment) is not a setting" in text
    assert result.stdout.startswith("mlflow-gcp ")  # stdout stays clean


@pytest.mark.parametrize(
    "text, line",
    [
        ("MLFLOW_GCP_REGION=europe-west1\nMLFLOW_GCP_PROJECT=\"demo-project\nMLFLOW_GCP_DB_TIER=db-f1-micro\n", 2),
        ("# settings\nMLFLOW_GCP_PROJECT demo-project\n", 2),
    ],
    ids=["unclosed-quote", "no-equals"],
)
def test_a_malformed_line_is_one_paragraph_naming_the_file_and_line(tmp_path, text, line):
    (tmp_path / ".env").write_text(text + "MLFLOW_TRACKING_PASSWORD='s3cret value'\n")
    result = run(tmp_path, "status")
    assert result.returncode == 2
    assert f"The settings file {tmp_path / '.env'} cannot be read at line {line}" in result.stderr
    # Not python-dotenv's own message, nor the missing project that follows from the dropped line; no value shown.
    assert "python-dotenv" not in result.stderr and "No project given" not in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_every_mlflow_gcp_variable_the_code_reads_is_known():
    """A variable added to the code must be added to env_file.OTHER_VARIABLES (or be a setting), else users who
    set it get a wrong warning."""
    used = {m for path in SRC.rglob("*.py") for m in re.findall(r"MLFLOW_GCP_[A-Z0-9_]*[A-Z0-9]", path.read_text())}
    unknown = used - set(setting_variables()) - OTHER_VARIABLES
    assert unknown == set(), f"add {sorted(unknown)} to mlflow_gcp.env_file.OTHER_VARIABLES"
