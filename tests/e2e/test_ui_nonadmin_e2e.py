"""The MLflow UI for a logged-in non-admin, in headless Chromium: every page a reader visits works (issue 19).

The route guard and MLflow's fail-closed auth keep some routes to admins (validator_coverage.DECLARED_ADMIN_ONLY).
A UI page that called one would break for every normal user, so a non-admin with READ on one experiment walks the
pages a user visits, and every API request the UI makes to the service must succeed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import mlflow
import pytest
import requests
from e2e_chromium import Chromium, Page, chromium_binary
from e2e_deployment import ENTRYPOINT
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from conftest import Rehearsal

sys.path.insert(0, str(ENTRYPOINT.parent))

from mlflow_gcp_server import route_policy

pytestmark = pytest.mark.e2e

READER = ("ui-reader", "ui-reader-password-12345")
MODEL = "ui-reader-model"

FORBIDDEN, NOT_FOUND = 403, 404
# Same-origin API requests MLflow's UI makes that MLflow itself answers 404 for a missing optional thing:
# (method, path) -> why a 404 there is the page working, not failing. None in MLflow 3.17.2.
EXPECTED_NOT_FOUND: dict[tuple[str, str], str] = {}
# Requests the UI makes to families route_policy.py refuses to everyone, the admin included (403 from the guard).
# The pages show their content without them (the walk checks each page's text): they are features this server
# does not serve, not a reader's limit.
REFUSED_TO_EVERYONE: dict[tuple[str, str], str] = {
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"): "the first page asks whether the AI assistant is set "
                                                      "up (the assistant family is refused: route_policy.py)",
    ("GET", "/ajax-api/3.0/mlflow/assistant/providers"): "the same, for the assistant's provider list",
    ("GET", "/ajax-api/2.0/mlflow/gateway-proxy"): "the runs table lists the AI gateway's model routes for "
                                                   "its prompt-engineering form (the gateway family is refused)",
}


class AddOne(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input + 1


@dataclass
class Seen:
    method: str
    url: str
    kind: str  # the DevTools resource type: XHR, Fetch, Document, Script...
    status: int | None = None
    error: str | None = None
    canceled: bool = False  # by the page (a superseded request, a page left), not by the server
    finished: bool = False

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


def requests_seen(events: list[dict], session_id: str) -> dict[str, Seen]:
    seen: dict[str, Seen] = {}
    for event in list(events):
        if event.get("sessionId") != session_id:
            continue
        params, method = event["params"], event["method"]
        request_id = params.get("requestId")
        if method == "Network.requestWillBeSent":
            seen[request_id] = Seen(params["request"]["method"], params["request"]["url"], params.get("type", ""))
        elif request_id in seen and method == "Network.responseReceived":
            seen[request_id].status = params["response"]["status"]
        elif request_id in seen and method == "Network.loadingFinished":
            seen[request_id].finished = True
        elif request_id in seen and method == "Network.loadingFailed":
            seen[request_id].error = params.get("errorText") or "failed"
            seen[request_id].canceled = bool(params.get("canceled"))
            seen[request_id].finished = True
    return seen


def settle(browser: Chromium, page: Page, before: set[str], quiet: float = 1.0, timeout: float = 30) -> None:
    """Until the page has had no new request in flight and no new one for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last_count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = {key: item for key, item in requests_seen(browser.network_events, page.session_id).items()
                if key not in before}
        pending = [item for item in seen.values() if not item.finished]
        if pending or len(seen) != last_count:
            last_count, quiet_since = len(seen), time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return
        time.sleep(0.25)


@dataclass
class Shown:
    """What the reader may read: one experiment with all the things its pages show."""

    experiment_id: str
    denied_experiment_id: str
    run_id: str
    other_run_id: str
    logged_model_id: str
    trace_id: str
    dataset_id: str | None


@pytest.fixture(scope="module")
def reader(rehearsal: Rehearsal) -> tuple[str, str]:
    admin = (rehearsal.secrets.admin_user, rehearsal.secrets.admin_password)
    created = requests.post(f"{rehearsal.tracking_uri}/api/2.0/mlflow/users/create", auth=admin, timeout=60,
                            json={"username": READER[0], "password": READER[1]})
    assert created.ok or "already exists" in created.text, created.text
    return READER


@pytest.fixture(scope="module")
def shown(rehearsal: Rehearsal, client_env, reader, tmp_path_factory) -> Shown:
    """Made by the admin; the reader gets READ on the experiment and the model, and nothing on another one."""
    import pandas as pd

    client = MlflowClient()
    experiment_id = client.create_experiment("ui-reader-experiment")
    denied_experiment_id = client.create_experiment("ui-reader-denied")
    mlflow.set_experiment(experiment_id=experiment_id)
    files = tmp_path_factory.mktemp("ui-reader")
    (files / "notes.txt").write_text("notes the reader may read")
    with mlflow.start_run(run_name="ui-reader-run") as run:
        mlflow.log_params({"alpha": "0.5", "layers": "3"})
        for step in range(3):
            mlflow.log_metrics({"accuracy": 0.8 + step / 100, "loss": 0.3 - step / 100}, step=step)
        mlflow.log_artifact(str(files / "notes.txt"))
        mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame({"x": [1, 2]}), name="ui-reader-data"),
                         context="training")
        model = mlflow.pyfunc.log_model(name="model", python_model=AddOne(), pip_requirements=["pandas"])
    with mlflow.start_run(run_name="ui-reader-other-run") as other:
        mlflow.log_metric("accuracy", 0.7)
    version = mlflow.register_model(model.model_uri, MODEL)

    @mlflow.trace
    def add(a, b):
        return a + b

    assert add(1, 2) == 3
    trace_id = mlflow.get_last_active_trace_id()
    mlflow.flush_trace_async_logging()

    dataset_id = None
    try:
        from mlflow.genai.datasets import create_dataset

        evaluation = create_dataset(name="ui-reader-evaluation", experiment_id=[experiment_id])
        evaluation.merge_records([{"inputs": {"question": "1+2?"}, "expectations": {"answer": "3"}}])
        dataset_id = evaluation.dataset_id
    except ImportError:
        pass

    auth = AuthServiceClient(rehearsal.tracking_uri)
    auth.grant_user_permission(reader[0], "experiment", experiment_id, "READ")
    auth.grant_user_permission(reader[0], "experiment", denied_experiment_id, "DENY")
    auth.grant_user_permission(reader[0], "registered_model", MODEL, "READ")
    assert version.version == "1"
    return Shown(experiment_id, denied_experiment_id, run.info.run_id, other.info.run_id, model.model_id,
                 trace_id, dataset_id)


@pytest.fixture(scope="module")
def reader_browser(rehearsal: Rehearsal, reader):
    if not chromium_binary():
        pytest.skip("Chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        chromium = Chromium(Path(profile), rehearsal.front.url, reader)
        try:
            yield chromium
        finally:
            chromium.close()


def pages(shown: Shown) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, route after #, texts the page shows once loaded)."""
    experiment, run = shown.experiment_id, shown.run_id
    runs = quote(json.dumps([shown.run_id, shown.other_run_id]))
    listed = [
        ("experiment list", "/experiments", ("ui-reader-experiment",)),
        ("runs table", f"/experiments/{experiment}/runs", ("ui-reader-run", "ui-reader-other-run")),
        ("run overview", f"/experiments/{experiment}/runs/{run}", ("ui-reader-run", "alpha")),
        ("run metrics", f"/experiments/{experiment}/runs/{run}/model-metrics", ("accuracy",)),
        ("run artifacts", f"/experiments/{experiment}/runs/{run}/artifacts", ("notes.txt",)),
        ("run traces", f"/experiments/{experiment}/runs/{run}/traces", ("ui-reader-run",)),
        ("logged models", f"/experiments/{experiment}/models", ("model",)),
        ("logged model", f"/experiments/{experiment}/models/{shown.logged_model_id}", ("model",)),
        ("traces tab", f"/experiments/{experiment}/traces", ('"a": 1', "1 of 1")),
        ("trace details", f"/experiments/{experiment}/traces?selectedEvaluationId={shown.trace_id}", ("add",)),
        ("models list", "/models", (MODEL,)),
        ("registered model", f"/models/{MODEL}", (MODEL, "Version 1")),
        ("model version", f"/models/{MODEL}/versions/1", (MODEL, "Version 1")),
        ("compare runs", f"/compare-runs?runs={runs}&experiments={quote(json.dumps([experiment]))}",
         ("ui-reader-run", "ui-reader-other-run")),
    ]
    if shown.dataset_id:
        listed.append(("datasets", f"/experiments/{experiment}/datasets", ("ui-reader-evaluation",)))
    return listed


# The artifact tree's entry for the file: a click on it shows the file's preview (a /get-artifact request).
CLICK_NOTES = """
(() => {
  const entries = [...document.querySelectorAll('*')].filter(element => element.textContent.trim() === 'notes.txt');
  const deepest = entries.filter(element => !entries.some(other => other !== element && element.contains(other)));
  deepest.forEach(element => element.click());
  return deepest.length;
})()
"""


def is_api(url: str, service_url: str) -> bool:
    """A same-origin request for data (not the UI's own static files)."""
    if not url.startswith(service_url):
        return False
    path = urlsplit(url).path
    return path.startswith(("/api/", "/ajax-api/", "/get-artifact", "/model-versions/get-artifact", "/graphql"))


def refused_to_everyone(item: Seen) -> bool:
    return (item.status == FORBIDDEN and (item.method, item.path) in REFUSED_TO_EVERYONE
            and route_policy.classify(item.path).verdict is route_policy.Verdict.DENY)


def test_a_non_admin_reader_walks_the_ui_without_a_failed_request(rehearsal: Rehearsal, shown: Shown,
                                                                   reader_browser, artifacts_dir):
    service_url = rehearsal.front.service_url
    page = reader_browser.open_page()
    page.call("Network.enable")
    report: list[str] = []
    failures: list[str] = []
    for name, route, texts in pages(shown):
        before = set(requests_seen(reader_browser.network_events, page.session_id))
        page.navigate(f"{service_url}/#{route}")
        try:
            body = page.wait_for_text(texts, timeout=30)
            if name == "run artifacts":
                assert page.evaluate(CLICK_NOTES), "no entry for notes.txt in the artifact tree"
                page.wait_for_text(("notes the reader may read",), timeout=30)
            if name == "experiment list":
                assert "ui-reader-denied" not in body, "the list shows an experiment the reader is denied"
        except (TimeoutError, AssertionError) as error:
            failures.append(f"{name}: {error}")
            page.screenshot(artifacts_dir / f"ui-reader-{name.replace(' ', '-')}.png")
        settle(reader_browser, page, before)
        made = [item for key, item in requests_seen(reader_browser.network_events, page.session_id).items()
                if key not in before and is_api(item.url, service_url)]
        answered = {(item.method, item.url) for item in made if item.status is not None and item.status < 400}
        for item in made:
            outcome = item.status or ("canceled by the page" if item.canceled else item.error) or "no answer"
            report.append(f"{name}: {item.method} {item.url[len(service_url):]} -> {outcome}")
            # A request the page dropped (canceled, or left unanswered while the same one was answered) is the
            # UI's doing; every answer the server gave counts.
            dropped = item.status is None and (item.canceled or (item.method, item.url) in answered)
            allowed = dropped or (item.status is not None and item.status < 400) or refused_to_everyone(item) or (
                item.status == NOT_FOUND and (item.method, item.path) in EXPECTED_NOT_FOUND)
            if not allowed:
                failures.append(report[-1])
    (artifacts_dir / "ui-reader-requests.txt").write_text("\n".join(report) + "\n")
    assert not failures, "\n".join(failures)
    assert any("/get-artifact?" in line for line in report), "the artifact preview was not requested"
    assert any("get-trace-artifact" in line for line in report), "no trace was opened"


def test_what_the_ui_asks_of_refused_families_is_refused_to_the_admin_too(rehearsal: Rehearsal, reader):
    """The UI's requests in REFUSED_TO_EVERYONE are features turned off on this server, not a reader's limit."""
    admin = (rehearsal.secrets.admin_user, rehearsal.secrets.admin_password)
    for method, path in REFUSED_TO_EVERYONE:
        for auth in (admin, reader):
            response = requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=60)
            assert response.status_code == FORBIDDEN and "mlflow-gcp" in response.text, (path, response.text)
