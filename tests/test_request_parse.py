"""A request's body is parsed into its message once (container/mlflow_gcp_server/request_parse.py): the permission
check and the handler get the same message as two parses would give, and nothing is shared between requests."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))
# MLflow's protobuf messages and parse are the server image's pins (container/requirements.txt), which CI's
# lowest-versions run of the tool's floors does not install.
pytest.importorskip("mlflow")

from flask import Flask
from google.protobuf.json_format import ParseError
from mlflow.protos.service_pb2 import LogBatch, LogMetric
from mlflow.utils.proto_json_utils import parse_dict
from mlflow_gcp_server import request_parse

BATCH = {"run_id": "r1", "metrics": [{"key": f"m{i}", "value": 0.5, "timestamp": 1, "step": 0} for i in range(3)],
         "params": [], "tags": []}


@pytest.fixture
def handlers():
    calls = []

    def counting_parse(js_dict, message):
        calls.append(type(message).__name__)
        parse_dict(js_dict, message)

    namespace = SimpleNamespace(parse_dict=counting_parse, calls=calls)
    assert request_parse.install(namespace)
    assert not request_parse.install(namespace)  # once
    return namespace


def parsed(handlers, js_dict, message_type=LogBatch):
    message = message_type()
    handlers.parse_dict(js_dict, message)
    return message


def test_the_second_reader_gets_what_a_parse_gives_without_parsing(handlers):
    with Flask("t").test_request_context("/api/2.0/mlflow/runs/log-batch", method="POST"):
        check, handler = parsed(handlers, BATCH), parsed(handlers, BATCH)
    alone = LogBatch()
    parse_dict(BATCH, alone)
    assert check == handler == alone and handler is not check
    assert handler.HasField("run_id") and list(handler.params) == []  # what was set, set alike
    assert handlers.calls == ["LogBatch"]


def test_other_content_another_type_a_filled_message_or_another_request_parse_again(handlers):
    app = Flask("t")
    with app.test_request_context("/", method="POST"):
        parsed(handlers, BATCH)
        changed = {**BATCH, "run_id": "r2"}
        assert parsed(handlers, changed).run_id == "r2"
        parsed(handlers, {"run_id": "r1", "key": "k", "value": 1.0, "timestamp": 1, "step": 0}, LogMetric)
        filled = LogBatch(run_id="before")
        handlers.parse_dict(BATCH, filled)
    with app.test_request_context("/", method="POST"):
        parsed(handlers, BATCH)
    assert handlers.calls == ["LogBatch", "LogBatch", "LogMetric", "LogBatch", "LogBatch"]


def test_a_body_that_does_not_parse_fails_every_time(handlers):
    with Flask("t").test_request_context("/", method="POST"):
        for _ in range(2):
            with pytest.raises(ParseError):
                parsed(handlers, {"run_id": "r1", "metrics": [{"value": "not a number"}]})
    assert handlers.calls == ["LogBatch", "LogBatch"]


def test_outside_a_request_it_is_mlflows_parse(handlers):
    parsed(handlers, BATCH), parsed(handlers, BATCH)
    assert handlers.calls == ["LogBatch", "LogBatch"]


def test_the_pinned_mlflow_parses_requests_through_parse_dict():
    assert request_parse.parses_through_parse_dict()
