"""Reduce the generated bindings of the `google` Terraform provider to the small schema the tests check the
exported module against.

The bindings are the npm package `@cdktf/provider-google` (generated from the provider's own schema). For each
resource or data source type asked for, the result lists its arguments and blocks, recursively, and which of
them are required:

    {"provider": {...}, "resources": {"google_x": {"attributes": {"name": {"required": true}},
                                                   "blocks": {"settings": {...same shape...}}}},
     "data_sources": {...}}

Usage (the package is unpacked by `npm pack @cdktf/provider-google@VERSION && tar xzf ...`):

    python tests/terraform/reduce_provider_schema.py PACKAGE_DIR google_sql_database_instance ... \
        > tests/terraform/google_provider_schema.json

The time provider's `time_sleep` (the module's waits) the same way, from `@cdktf/provider-time@11.0.1`
(provider 0.13.1):

    python tests/terraform/reduce_provider_schema.py PACKAGE_DIR time_sleep > tests/terraform/time_provider_schema.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# One argument in a generated `...ToHclTerraform` function or `synthesizeHclAttributes` method.
ENTRY = re.compile(
    r"(?P<key>\w+): \{\s*value: (?P<value>.*?),\s*isBlock: (?P<block>true|false),\s*type: \"(?P<type>\w+)\"",
    re.S,
)
FUNCTION = re.compile(r"function (\w+)ToHclTerraform\(struct\) \{(.*?)\n\}", re.S)
METHOD = re.compile(r"synthesizeHclAttributes\(\) \{(.*?)\n    \}", re.S)
TYPE = re.compile(r"\.tfResourceType = \"(\w+)\"")
NESTED_CALL = re.compile(r"(?<!cdktf\.)\b(\w+)ToHclTerraform\b")
SOURCE_FIELD = re.compile(r"(?:struct|this)\.(_?)(\w+)")
INTERFACE = re.compile(r"export interface (\w+)(?: extends [\w.]+)? \{(.*?)\n\}", re.S)
PROPERTY = re.compile(r"readonly (\w+)(\??):")


def _entries(body: str) -> list[re.Match]:
    return list(ENTRY.finditer(body))


def _required_by_interface(declarations: str) -> dict[str, dict[str, bool]]:
    """Interface name -> camelCase property -> required (declared without `?`)."""
    return {
        name: {prop: not optional for prop, optional in PROPERTY.findall(body)}
        for name, body in INTERFACE.findall(declarations)
    }


def _schema(body: str, interface: dict[str, bool], functions: dict[str, str], interfaces: dict) -> dict:
    attributes: dict[str, dict] = {}
    blocks: dict[str, dict] = {}
    for entry in _entries(body):
        field = SOURCE_FIELD.search(entry["value"])
        camel = field.group(2) if field else ""
        required = interface.get(camel, False)
        nested = NESTED_CALL.search(entry["value"])
        if entry["block"] == "true" and nested:
            function = nested.group(1)
            type_name = function[0].upper() + function[1:]
            schema = _schema(functions[function], interfaces.get(type_name, {}), functions, interfaces)
            blocks[entry["key"]] = {"required": required, **schema}
        else:
            attributes[entry["key"]] = {"required": required}
    return {"attributes": attributes, "blocks": blocks}


def reduce_file(directory: Path) -> tuple[str, dict]:
    source = (directory / "index.js").read_text()
    declarations = (directory / "index.d.ts").read_text()
    type_name = TYPE.search(source).group(1)
    functions = dict(FUNCTION.findall(source))
    interfaces = _required_by_interface(declarations)
    config = next((v for k, v in interfaces.items() if k.endswith("Config")), {})
    method = METHOD.search(source).group(1)
    return type_name, _schema(method, config, functions, interfaces)


def main(package: Path, wanted: list[str]) -> dict:
    lib = package / "lib"
    result: dict = {
        "package": json.loads((package / "package.json").read_text())["cdktf"]["provider"],
        "resources": {},
        "data_sources": {},
    }
    for directory in sorted(p for p in lib.iterdir() if (p / "index.js").is_file()):
        head = (directory / "index.js").read_text()
        match = TYPE.search(head)
        if not match or match.group(1) not in wanted:
            continue
        kind = "data_sources" if directory.name.startswith("data-") else "resources"
        type_name, schema = reduce_file(directory)
        result[kind][type_name] = schema
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2:]), indent=1, sort_keys=True))
