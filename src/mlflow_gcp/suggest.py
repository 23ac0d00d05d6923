""""Did you mean …?" for a name typed by hand (a setting, a format, a choice)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` most likely misspells, or None."""
    choices = list(choices)
    lowered = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" Did you mean X?" or ""."""
    match = closest(word, choices)
    return f" Did you mean {match}?" if match else ""
