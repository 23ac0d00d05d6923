"""`credentials --format ...` with a hostile password (a `mlflow-credentials` secret written by hand): every format
is read back with the exact bytes by the consumer it is for, or refused with a clear error. Never a wrong value,
never a command run.

Consumers: `eval` in bash (env), `set -a; . FILE` in bash and python-dotenv (dotenv), the rules of
`docker run --env-file` (docker; docker itself cannot run here, so its parser, docker/cli opts/file.go
parseKeyValueFile, is restated below), and json.
"""

from __future__ import annotations

import io
import json
import os
import subprocess

from dotenv import dotenv_values

from mlflow_gcp.config import SECRET_MLFLOW
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

KEY = "MLFLOW_TRACKING_PASSWORD"

# password → formats that must refuse it (every other format must give it back exactly)
HOSTILE = {
    'a$HOME b"c" `touch PWNED1` $(touch PWNED2) #not-a-comment \t~!*?[x] ; |&<>': set(),
    "back\\slash\\n-not-a-newline \\t": set(),
    "x${HOME}y": {"dotenv"},
    "it's": {"dotenv"},
    "two\\\\backslashes": {"dotenv"},
    "ends-with-backslash\\": {"dotenv"},
    "line1\nline2": {"docker"},
    "inner  spaces\tand a tab": set(),  # (the secret value is stripped, as `echo pw | gcloud ...` adds a newline)
}


def docker_env_file(text: str) -> dict[str, str]:
    """docker/cli opts/file.go parseKeyValueFile: lines split on \\n (a trailing \\r dropped), leading whitespace
    trimmed, empty and `#` lines skipped, split at the first `=`, the value passed through untouched."""
    values = {}
    for raw in text.split("\n"):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key, f"docker would not take this line: {line!r}"
        values[key] = value
    return values


def read_back(fmt: str, text: str, workdir) -> str:
    if fmt == "json":
        return json.loads(text)[KEY]
    if fmt == "docker":
        return docker_env_file(text)[KEY]
    path = workdir / f"creds.{fmt}"
    path.write_text(text)
    script = f'eval "$(cat {path})"' if fmt == "env" else f"set -a; . {path}; set +a"
    done = subprocess.run(
        ["bash", "-c", script + f'; printf %s "${KEY}"'],
        capture_output=True,
        text=True,
        cwd=workdir,
        env={"PATH": os.environ["PATH"], "HOME": "/home/someone"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    if fmt == "dotenv":
        parsed = dotenv_values(stream=io.StringIO(text))[KEY]
        assert parsed == done.stdout, (parsed, done.stdout)  # python-dotenv and bash agree
    return done.stdout


def set_password_by_hand(fake, password: str) -> None:
    version = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{SECRET_MLFLOW}"][-1]
    version["data"] = f"admin:{password}".encode()


def test_every_format_gives_the_exact_password_or_refuses_it(fake, double, tmp_path):
    workdir = tmp_path / "consumer"
    workdir.mkdir()
    for password, refused_by in HOSTILE.items():
        set_password_by_hand(fake, password)
        for fmt in ("env", "dotenv", "docker", "json"):
            result = cli("credentials", "--format", fmt)
            if fmt in refused_by:
                assert result.exit_code == 2, (password, fmt, result.output)
                assert result.stdout == "" and "--format" in result.stderr and "Traceback" not in result.output
                continue
            assert result.exit_code == 0, (password, fmt, result.output)
            assert read_back(fmt, result.stdout, workdir) == password, (password, fmt, result.stdout)
    assert sorted(p.name for p in workdir.iterdir()) == ["creds.dotenv", "creds.env"]  # no PWNED file: nothing ran


def test_dotenv_is_single_quoted_and_help_says_who_reads_each_format(fake):
    from mlflow_gcp.cli.credentials import Format, render

    assert render({"A": "p$x"}, Format.dotenv) == "A='p$x'\n"
    result = cli("credentials", "--help")
    for words in ("python-dotenv", "set -a", "docker run --env-file"):
        assert words in " ".join(result.stdout.replace("│", " ").split())  # the help is in Rich panels
