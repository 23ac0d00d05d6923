"""A name typed by hand (a setting to reset, a step, a flag, a format, a choice) is refused before any request,
with the closest name: "did you mean"."""

from __future__ import annotations

import re

import pytest

from tests.helpers import cli


def flat(text: str) -> str:
    """The message without the error panel's frame and line breaks."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_reset_of_a_misspelt_setting_is_refused_before_any_request(fake):
    result = cli("up", "--reset", "db-teir")
    assert result.exit_code == 2
    assert "Did you mean --reset db-tier?" in flat(result.stderr)
    assert "connector-machine-type" not in result.stderr  # the closest name, not the 33 of them
    assert fake.requests() == []


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (("stauts",), "Did you mean 'status'?"),
        (("step", "apsi"), "Did you mean 'apis'?"),
        (("up", "--db-teir", "db-g1-small"), "--db-tier"),
        (("up", "--vpc-egress", "dirct"), "Did you mean direct?"),
        (("up", "--db-edition", "ENTERPRISE_PLSU"), "Did you mean ENTERPRISE_PLUS?"),
        (("credentials", "--format", "jsno"), "Did you mean json?"),
    ],
    ids=["command", "step", "flag", "vpc-egress", "db-edition", "format"],
)
def test_a_typo_gets_the_closest_name_before_any_request(fake, args, suggestion):
    result = cli(*args)
    assert result.exit_code == 2
    assert suggestion in flat(result.stderr)
    assert fake.requests() == []


def test_an_unknown_format_lists_the_choices_cleanly(fake):
    result = cli("credentials", "--format", "yaml")
    assert result.exit_code == 2
    text = flat(result.stderr)
    assert "'yaml' is not a format: choose env, dotenv, docker or json." in text
    assert "Value error" not in text and "Did you mean" not in text
    assert result.stdout == "" and fake.requests() == []
