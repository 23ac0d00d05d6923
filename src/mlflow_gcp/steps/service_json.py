"""The Cloud Run service as REST JSON (the shape `service_spec.build_service` gives): from and to the client's
objects, the owned fields that differ from the live service, and the desired fields laid over the live ones."""

from __future__ import annotations

import json
from typing import Any

from mlflow_gcp.service_spec import SERVICE_URLS_VAR


def to_json_dict(service: Any, *, defaults: bool = False) -> dict[str, Any]:
    """A run_v2.Service as its REST JSON dict; with `defaults`, fields at their default value are included."""
    from google.cloud import run_v2
    from google.protobuf import json_format

    if defaults:
        return run_v2.Service.to_dict(service, use_integers_for_enums=False, preserving_proto_field_name=False)
    return json_format.MessageToDict(run_v2.Service.pb(service))


def from_json_dict(data: dict[str, Any]):
    from google.cloud import run_v2

    return run_v2.Service.from_json(json.dumps(data), ignore_unknown_fields=True)


def _field_name(path: tuple[str, ...]) -> str:
    """A readable name for a differing field: `image`, `env`, `scaling`, `labels.managed-by`..."""
    if path[:2] == ("template", "containers"):
        return path[3] if len(path) > 3 else "containers"
    if path[0] == "template" and len(path) > 1:
        return path[1]
    if path[0] == "labels":
        return ".".join(path)
    return path[0]


def diff(owned: Any, want: Any, live: Any, path: tuple[str, ...] = ()) -> list[str]:
    """The fields `owned` (the desired REST dict) sets whose value differs between `want` and `live` (both
    printed with their defaults, so a value reset to its default is seen). The containers list is compared
    element by element on the keys we set; other lists are owned whole."""
    if isinstance(owned, dict):
        out: list[str] = []
        for key, sub in owned.items():
            w = want.get(key) if isinstance(want, dict) else None
            lv = live.get(key) if isinstance(live, dict) else None
            out += diff(sub, w, lv, (*path, key))
        return out
    if path and path[-1] == "containers" and isinstance(owned, list):
        live_list = live if isinstance(live, list) else []
        want_list = want if isinstance(want, list) else []
        if len(live_list) != len(owned):
            return [_field_name(path)]
        out = []
        for i, sub in enumerate(owned):
            out += diff(sub, want_list[i] if i < len(want_list) else None, live_list[i], (*path, str(i)))
        return out
    return [] if want == live else [_field_name(path)]


def merged(live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The live service with the desired fields laid over it: maps are merged (labels and annotations of
    others are kept), containers merged by position, other lists replaced."""
    out = dict(live)
    for key, value in desired.items():
        if isinstance(value, dict) and isinstance(live.get(key), dict):
            out[key] = merged(live[key], value)
        elif key == "containers" and isinstance(live.get(key), list):
            old = live[key]
            out[key] = [
                merged(old[i], item) if i < len(old) and isinstance(old[i], dict) else item
                for i, item in enumerate(value)
            ]
        else:
            out[key] = value
    return out


def service_urls_of(service: dict[str, Any]) -> list[str]:
    """The MLFLOW_GCP_SERVICE_URLS value of a service in the REST JSON shape (tests, status)."""
    for item in service.get("template", {}).get("containers", [{}])[0].get("env", []):
        if item.get("name") == SERVICE_URLS_VAR:
            return [u for u in item.get("value", "").split(",") if u]
    return []
