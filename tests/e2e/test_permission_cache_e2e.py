"""End-to-end: the server's permission cache (mlflow_gcp_server/permission_cache.py) with the real server, MariaDB
and a non-admin logging metrics. A permission taken away through this server is refused at once; taken away behind
its back (as through another Cloud Run instance, whose change this one is not told of) it is refused once the
cache's revocation bound has passed."""

from __future__ import annotations

import sys
import time

import pytest
import requests
from e2e_deployment import ENTRYPOINT

from conftest import Rehearsal

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ENTRYPOINT.parent))
from mlflow_gcp_server.permission_cache import DEFAULT_TTL_SECONDS  # noqa: E402

CARL = ("carl-cache", "carl-cache-password-123")
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


def api(rehearsal: Rehearsal, method: str, path: str, auth, **kwargs) -> requests.Response:
    return requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=60, **kwargs)


def test_a_revoked_permission_is_refused_at_once_here_and_within_the_bound_elsewhere(rehearsal: Rehearsal,
                                                                                       mariadb):
    admin = (rehearsal.secrets.admin_user, rehearsal.secrets.admin_password)
    assert api(rehearsal, "POST", "/api/2.0/mlflow/users/create", admin,
               json={"username": CARL[0], "password": CARL[1]}).ok
    experiment_id = api(rehearsal, "POST", "/api/2.0/mlflow/experiments/create", admin,
                        json={"name": "e2e-permission-cache"}).json()["experiment_id"]
    run_id = api(rehearsal, "POST", "/api/2.0/mlflow/runs/create", admin,
                 json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    grant = {"username": CARL[0], "resource_type": "experiment", "resource_id": experiment_id}

    def set_permission(permission: str) -> None:
        api(rehearsal, "POST", REVOKE, admin, json=grant)  # one grant per user and resource
        answer = api(rehearsal, "POST", GRANT, admin, json={**grant, "permission": permission})
        assert answer.ok, answer.text

    def log_metric() -> int:
        return api(rehearsal, "POST", "/api/2.0/mlflow/runs/log-metric", CARL,
                   json={"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0, "step": 0}).status_code

    assert log_metric() == 403  # default READ: not an editor yet
    set_permission("EDIT")
    assert log_metric() == 200  # a refusal is not cached: the new grant works at once
    assert log_metric() == 200  # now cached
    set_permission("DENY")
    assert log_metric() == 403  # this instance served the revocation: at once
    set_permission("EDIT")
    assert log_metric() == 200

    # Behind the server's back, as another instance would write it: this one keeps its decision, at most the bound.
    connection = mariadb.connect(rehearsal.settings.auth_db_name)
    try:
        with connection.cursor() as cursor:
            changed = cursor.execute(
                "UPDATE role_permissions SET permission = 'DENY' "
                "WHERE resource_type = 'experiment' AND resource_pattern = %s", (experiment_id,))
    finally:
        connection.close()
    assert changed >= 1
    time.sleep(DEFAULT_TTL_SECONDS + 0.5)  # the revocation bound the README states (not a timing assertion)
    assert log_metric() == 403
