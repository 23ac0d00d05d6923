"""`--help` reads at 80 and 120 columns (issue 25, point 5): the common options first, the rest in sections,
choices shown, names and defaults whole, nothing wider than the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import cli


def help_at(columns: int, *words: str) -> str:
    """The help as a terminal of that width shows it (CliRunner forces Click's width to 80)."""
    env = {**os.environ, "COLUMNS": str(columns)}
    done = subprocess.run(
        [sys.executable, "-m", "mlflow_gcp", *words, "--help"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


SECTIONS = [
    "Options",
    "Advanced options",
    "Network settings",
    "Database settings",
    "Storage settings",
    "Deployment settings",
]


def sections(text: str) -> dict[str, list[str]]:
    """Section title -> the option names of its rows (continuation lines left out)."""
    found: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if re.fullmatch(r"[A-Z][A-Za-z ]+:", line):
            title = line[:-1]
            found[title] = []
        elif title and line.startswith("  -"):
            found[title].append(line.split()[0].rstrip(","))
    return found


@pytest.mark.parametrize(("columns", "most_lines"), [(80, 130), (120, 85)])
def test_up_help_puts_the_common_options_first(columns, most_lines):
    text = help_at(columns, "up")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert len(lines) <= most_lines, len(lines)  # 160 in one Rich panel per group at 80 columns before
    found = sections(text)
    assert list(found) == SECTIONS
    assert found["Options"][:4] == ["--project", "--region", "--dry-run", "-y"]
    assert "--json" in found["Options"] and "--skip-preflight" in found["Advanced options"]
    assert {"--reset", "--exit-code", "--move-to-new-resources"} <= set(found["Advanced options"])
    assert "--vpc-egress connector|direct" in text
    assert not [line for line in lines if line.rstrip().endswith("-")], "a name broken at a hyphen"
    assert "[default: mlflow-tracking-database]" in " ".join(text.split())


@pytest.mark.parametrize("columns", [80, 120])
def test_the_command_list_is_grouped_and_says_each_command_whole(columns):
    text = help_at(columns)
    assert max(len(line) for line in text.splitlines()) <= columns
    flat = " ".join(text.split())
    for title, command in (("Deploy", "up"), ("Look", "status"), ("Use", "credentials"), ("Backups", "restore")):
        assert re.search(rf"^{title}:\n(  .*\n)*  {command} ", text, re.MULTILINE), (title, command)
    assert "keeping the data (database, bucket, secrets) unless --delete-data." in flat
    assert not [line for line in text.splitlines() if line.startswith("  ") and line.endswith("...")]  # not cut


def test_choices_and_arguments_read_as_words():
    credentials = cli("credentials", "--help", env={"COLUMNS": "80"}).stdout
    assert "--format [env|dotenv|docker|json]" in credentials
    add = cli("users", "add", "--help", env={"COLUMNS": "80"}).stdout
    assert re.search(r"^  NAME +The new user's login\.", add, re.MULTILINE), add
    assert "<str>" not in add
