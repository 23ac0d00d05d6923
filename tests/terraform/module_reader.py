"""Read an exported Terraform module back: parse it with python-hcl2, check it against the provider's schema, and
evaluate the small subset of expressions the module uses (variables, locals, string templates, `==`/`!=`,
conditionals, `*` of numbers, `upper()`), with references to other resources' attributes answered by the test."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

SCHEMA_PATH = Path(__file__).with_name("google_provider_schema.json")
TIME_SCHEMA_PATH = Path(__file__).with_name("time_provider_schema.json")
# Meta-arguments of every resource, not in any provider's schema.
META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "lifecycle", "provider"})
BLOCK_MARK = "__is_block__"
INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@dataclass
class Module:
    files: dict[str, dict]

    @classmethod
    def load(cls, directory: Path) -> Module:
        return cls({p.name: hcl2.load(p.open()) for p in sorted(directory.glob("*.tf"))})

    def blocks(self, kind: str) -> Iterator[dict]:
        for parsed in self.files.values():
            yield from parsed.get(kind, [])

    def resources(self, kind: str = "resource") -> dict[str, dict]:
        """`type.name` -> body."""
        found = {}
        for block in self.blocks(kind):
            for type_, named in block.items():
                for name, body in named.items():
                    found[f"{unquote(type_)}.{unquote(name)}"] = body
        return found

    def variables(self) -> dict[str, Any]:
        return {unquote(k): v.get("default") for block in self.blocks("variable") for k, v in block.items()}

    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self.blocks("locals"):
            merged.update({k: v for k, v in block.items() if k != BLOCK_MARK})
        return merged

    def imports(self) -> dict[str, str]:
        """Resource address -> import id."""
        return {
            block["to"].removeprefix("${").removesuffix("}"): unquote(block["id"]) for block in self.blocks("import")
        }


def schema_problems(module: Module, schema: dict | None = None) -> list[str]:
    """Every resource type, argument and block the module uses that its provider does not have, and every
    required argument it leaves out: `google_*` against the google provider, `time_*` against the time provider
    (time_provider_schema.json, reduced from `@cdktf/provider-time` 11.0.1 = provider 0.13.1). Types of the
    random provider are not checked."""
    schemas = {
        "google_": schema or json.loads(SCHEMA_PATH.read_text()),
        "time_": json.loads(TIME_SCHEMA_PATH.read_text()),
    }
    problems: list[str] = []
    for kind, table in (("resource", "resources"), ("data", "data_sources")):
        for address, body in module.resources(kind).items():
            type_ = address.split(".")[0]
            provider = schemas.get(type_.split("_")[0] + "_")
            if provider is None:
                continue
            if type_ not in provider[table]:
                problems.append(f"{kind} type {type_} is not in the provider schema (or not in the reduced copy)")
                continue
            problems += _body_problems(f"{kind} {address}", body, provider[table][type_])
    return problems


def _body_problems(where: str, body: dict, schema: dict) -> list[str]:
    problems = []
    for key, value in body.items():
        if key.startswith("__") or key in META_ARGUMENTS:
            continue
        is_block = isinstance(value, list) and value and all(isinstance(v, dict) and v.get(BLOCK_MARK) for v in value)
        if is_block:
            if key not in schema["blocks"]:
                problems.append(f"{where}: no block {key}")
                continue
            for nested in value:
                problems += _body_problems(f"{where}.{key}", nested, schema["blocks"][key])
        elif key not in schema["attributes"]:
            problems.append(f"{where}: no argument {key}")
    for key, spec in schema["attributes"].items():
        if spec["required"] and key not in body:
            problems.append(f"{where}: required argument {key} is missing")
    for key, spec in schema["blocks"].items():
        if spec["required"] and key not in body:
            problems.append(f"{where}: required block {key} is missing")
    return problems


class Evaluator:
    def __init__(self, module: Module, tfvars: dict[str, Any], reference: Callable[[str], Any]) -> None:
        self.variables = {
            k: self.value(v) if isinstance(v, (dict, list)) else unquote(v) if isinstance(v, str) else v
            for k, v in {**module.variables(), **tfvars}.items()
        }
        self.locals = module.locals()
        self.reference = reference

    def value(self, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {
                unquote(k): self.value(v)
                for k, v in raw.items()
                if not k.startswith("__") and k not in ("depends_on", "lifecycle")
            }
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if not isinstance(raw, str):
            return raw
        if raw.startswith('"') and raw.endswith('"'):
            return self.template(raw[1:-1])
        if raw.startswith("${") and raw.endswith("}"):
            return self.expression(raw[2:-1])
        return raw

    def template(self, text: str) -> str:
        text = text.replace("\\n", "\n").replace('\\"', '"')
        return INTERPOLATION.sub(lambda m: str(self.expression(m.group(1))), text)

    def expression(self, text: str) -> Any:
        text = text.strip()
        conditional = re.fullmatch(r"(.+?) \? (.+?) : (.+)", text, re.S)
        if conditional:
            test, yes, no = conditional.groups()
            return self.expression(yes) if self.expression(test) else self.expression(no)
        for operator in ("!=", "=="):
            left, found, right = text.partition(f" {operator} ")
            if found:
                equal = self.expression(left) == self.expression(right)
                return equal if operator == "==" else not equal
        left, found, right = text.rpartition(" * ")
        if found and _balanced(left) and _balanced(right):
            return self.expression(left) * self.expression(right)
        if text.startswith('"') and text.endswith('"'):
            return self.template(text[1:-1])
        call = re.fullmatch(r"(\w+)\((.*)\)", text, re.S)
        if call and call.group(1) in FUNCTIONS and _balanced(call.group(2)):
            return FUNCTIONS[call.group(1)](*[self.expression(a) for a in _split_top_level(call.group(2))])
        if text.startswith("[") and text.endswith("]") and _balanced(text[1:-1]):
            return [self.expression(a) for a in _split_top_level(text[1:-1])]
        if text.startswith("var."):
            name, _, key = text[4:].partition("[")
            value = self.variables[name]
            return value[unquote(key.rstrip("]"))] if key else value
        if text.startswith("local."):
            return self.value(self.locals[text[6:]])
        if text in ("true", "false"):
            return text == "true"
        if re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        return self.reference(text)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "upper": lambda text: str(text).upper(),
    "concat": lambda *lists: [item for items in lists for item in items],
    "formatlist": lambda spec, items: [spec.replace("%s", str(item)) for item in items],
    "join": lambda separator, items: separator.join(str(item) for item in items),
    "lookup": lambda mapping, key, default: mapping.get(key, default),
}


def _balanced(text: str) -> bool:
    depth, quoted = 0, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def _split_top_level(text: str) -> list[str]:
    """The comma-separated items of an argument or list body, commas inside quotes or brackets kept."""
    items, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            items.append(text[start:i].strip())
            start = i + 1
    last = text[start:].strip()
    return [*items, last] if last else items


def read_tfvars(path: Path) -> dict[str, Any]:
    parsed = hcl2.load(path.open()).items()
    return {k: (unquote(v) if isinstance(v, str) else v) for k, v in parsed if not k.startswith("__")}
