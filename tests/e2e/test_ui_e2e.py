"""The MLflow UI at the service URL, in headless Chromium, with the login."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pytest
from e2e_chromium import Chromium, chromium_binary

from conftest import Rehearsal

pytestmark = pytest.mark.e2e

CREATE_EXPERIMENT_FROM_PAGE = """
fetch('/ajax-api/2.0/mlflow/experiments/create', {
  method: 'POST', headers: {'Content-Type': 'application/json'},
  body: JSON.stringify({name: 'created-from-the-ui'})
}).then(response => response.status)
"""


@pytest.fixture(scope="module")
def browser(rehearsal: Rehearsal):
    if not chromium_binary():
        pytest.skip("Chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        login = (rehearsal.secrets.admin_user, rehearsal.secrets.admin_password)
        chromium = Chromium(Path(profile), rehearsal.front.url, login)
        try:
            yield chromium
        finally:
            chromium.close()


def test_ui_shows_the_experiment_behind_the_login(rehearsal: Rehearsal, client_env, browser, artifacts_dir):
    with mlflow.start_run(experiment_id=mlflow.set_experiment("test_experiment").experiment_id,
                          run_name="run-seen-in-the-ui"):
        mlflow.log_metric("accuracy", 0.97)
    experiment = mlflow.get_experiment_by_name("test_experiment")

    page = browser.open_page()
    page.navigate(f"{rehearsal.front.service_url}/#/experiments/{experiment.experiment_id}/runs")
    try:
        page.wait_for_text(("test_experiment", "run-seen-in-the-ui"))
    finally:
        page.screenshot(artifacts_dir / "ui-experiment.png")
    assert browser.auth_challenges >= 1

    # A write action from the page, as the UI sends it (same-origin POST with an Origin header).
    assert page.evaluate(CREATE_EXPERIMENT_FROM_PAGE) == 200, json.dumps(rehearsal.front.stats.__dict__, default=str)
    assert mlflow.get_experiment_by_name("created-from-the-ui") is not None
