"""A small writer of HCL2: blocks, attributes, maps, lists and raw expressions.

Strings are written as HCL templates, so `${...}` inside a string is an interpolation; names validated by the
settings never contain one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INDENT = "  "
# A string that is one interpolation and nothing else is written as the bare expression.
_WHOLE_INTERPOLATION = re.compile(r"^\$\{([^{}]*)\}$")


@dataclass(frozen=True)
class Expr:
    """A raw HCL expression such as `var.region` or `google_service_account.run.email`."""

    text: str

    def __str__(self) -> str:  # inside an f-string it becomes an interpolation
        return "${" + self.text + "}"


@dataclass
class Block:
    type: str
    labels: tuple[str, ...] = ()
    body: dict[str, Any] = field(default_factory=dict)
    # Lines written as `#` comments at the top of the block (checkov reads its skips there).
    comments: tuple[str, ...] = ()


def quote(text: str) -> str:
    escaped = json.dumps(text, ensure_ascii=False)  # HCL string escapes are JSON's for \\, \" and \n
    return escaped.replace("%{", "%%{")


def render_value(value: Any, depth: int) -> str:
    if isinstance(value, Expr):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        whole = _WHOLE_INTERPOLATION.match(value)
        return whole.group(1) if whole else quote(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pad = INDENT * (depth + 1)
        lines = aligned_lines([(_key(k), render_value(v, depth + 1)) for k, v in value.items()], pad)
        return "{\n" + "\n".join(lines) + "\n" + INDENT * depth + "}"
    if isinstance(value, (list, tuple)):
        items = [render_value(v, depth + 1) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 80:
            return one_line
        pad = INDENT * (depth + 1)
        return "[\n" + "".join(f"{pad}{item},\n" for item in items) + INDENT * depth + "]"
    raise TypeError(f"cannot write {value!r} as HCL")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and not key[0].isdigit() else quote(key)


def aligned_lines(pairs: list[tuple[str, str]], pad: str) -> list[str]:
    """`key = value` lines aligned as `terraform fmt` aligns them: the `=` of consecutive one-line attributes in
    one column; an attribute whose value spans lines stands alone and ends the run (hclwrite's formatCells)."""
    lines: list[str] = []
    run: list[tuple[str, str]] = []

    def close() -> None:
        width = max((len(k) for k, _ in run), default=0)
        lines.extend(f"{pad}{k.ljust(width)} = {v}" for k, v in run)
        run.clear()

    for key, text in pairs:
        if "\n" in text:
            close()
            lines.append(f"{pad}{key} = {text}")
        else:
            run.append((key, text))
    close()
    return lines


def _is_blocks(value: Any) -> bool:
    return isinstance(value, Block) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, Block) for v in value)
    )


def render_block(block: Block, depth: int = 0) -> str:
    pad = INDENT * depth
    head = " ".join([block.type, *(quote(label) for label in block.labels)])
    lines = [f"{pad}{head} {{"]
    lines += [f"{pad}{INDENT}#{comment}" for comment in block.comments]
    run: list[tuple[str, str]] = []  # consecutive attributes, aligned together as `terraform fmt` does
    for key, value in block.body.items():
        if _is_blocks(value):
            lines += aligned_lines(run, pad + INDENT)
            run = []
            for nested in value if isinstance(value, list) else [value]:
                lines.append(render_block(Block(key, nested.labels, nested.body, nested.comments), depth + 1))
        else:
            run.append((_key(key), render_value(value, depth + 1)))
    lines += aligned_lines(run, pad + INDENT)
    lines.append(f"{pad}}}")
    return "\n".join(lines)


def render_file(blocks: list[Block], header: str = "") -> str:
    parts = [header.rstrip() + "\n"] if header else []
    parts += [render_block(block) + "\n" for block in blocks]
    return "\n".join(parts)
