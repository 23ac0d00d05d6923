"""What a change does to the running deployment is known per field, said on the line of the change, and a change
that restarts the database or replaces a resource needs a yes (a terminal, or --yes) before anything is sent."""

from __future__ import annotations

import pytest

from mlflow_gcp.cli import approval
from mlflow_gcp.engine.base import Impact, Mode
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, run_steps

INSTANCE = "mlflow-tracking-database"
CONNECTOR = f"projects/{PROJECT}/locations/europe-west1/connectors/vpc-connector-mlflow"


def sent(fake) -> list[tuple[str, str, str]]:
    return [(r.api, r.method, r.path) for r in fake.mutating_requests() if "/operations" not in r.path]


def test_a_tier_change_without_a_terminal_or_yes_stops_before_any_request(deployed):
    result = cli("up", "--db-tier", "db-g1-small")
    assert result.exit_code == 1
    assert "restarts the database for a few minutes" in result.output
    assert "--yes" in result.output
    assert deployed.mutating_requests() == []
    assert deployed.sql_instances[INSTANCE]["settings"]["tier"] == "db-f1-micro"


def test_a_tier_change_with_yes_patches_only_the_instance(deployed):
    result = cli("up", "--db-tier", "db-g1-small", "--yes")
    assert result.exit_code == 0, result.output
    assert [(api, method) for api, method, _ in sent(deployed) if "mlflow-gcp-settings" not in _] == [
        ("sqladmin", "PATCH")
    ]
    assert deployed.sql_instances[INSTANCE]["settings"]["tier"] == "db-g1-small"
    assert "restarts the database for a few minutes" in result.output


def test_dry_run_says_the_tier_change_restarts_the_database(deployed):
    result = cli("up", "--dry-run", "--db-tier", "db-g1-small")
    assert result.exit_code == 0, result.output
    assert "tier restarts the database for a few minutes" in result.output
    assert deployed.mutating_requests() == []


@pytest.mark.parametrize("answer, patched", [("n\n", False), ("y\n", True)])
def test_on_a_terminal_up_asks_first(deployed, monkeypatch, answer, patched):
    monkeypatch.setattr(approval, "interactive", lambda: True)
    result = cli("up", "--db-tier", "db-g1-small", input=answer)
    assert "restarts the database for a few minutes. Go ahead?" in result.output
    assert (result.exit_code == 0) is patched, result.output
    assert (deployed.sql_instances[INSTANCE]["settings"]["tier"] == "db-g1-small") is patched
    if not patched:
        assert deployed.mutating_requests() == []


def test_a_new_revision_needs_no_yes_and_says_so(deployed):
    result = cli("up", "--max-instances", "4")
    assert result.exit_code == 0, result.output
    assert "new revision" in " ".join(result.output.split())


# -- each disruptive field, through the steps (the engine asks `approve` before sending) --------------------


def refuse(change):
    from mlflow_gcp.errors import ChangeNotAcceptedError

    raise ChangeNotAcceptedError(f"refused {change.resource}")


def plan_effects(step: str, **settings) -> dict[str, Impact]:
    [*_, result] = run_steps(step, mode=Mode.PLAN, **settings)
    return {f: e.impact for c in result.changes for f, e in c.field_effects()}


@pytest.fixture
def database(fake):
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    run_steps("network", "database", db_version="MYSQL_8_0")
    fake.clear_log()
    return fake


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"db_tier": "db-g1-small"}, "tier"),
        ({"db_edition": "ENTERPRISE_PLUS", "db_tier": "db-perf-optimized-N-2"}, "edition"),
        ({"db_version": "MYSQL_8_4"}, "databaseVersion"),
    ],
)
def test_database_fields_that_restart_it_are_refused_without_approval(database, settings, field):
    settings.setdefault("db_version", "MYSQL_8_0")
    assert plan_effects("database", **settings)[field] is Impact.RESTART
    with pytest.raises(Exception, match="refused Cloud SQL instance"):
        _run_refusing("database", **settings)
    assert database.mutating_requests() == []
    [result] = run_steps("database", **settings)  # accepted (the library default)
    assert field in result.changes[0].fields
    assert plan_effects("database", **settings) == {}


def test_binary_logging_turned_off_by_hand_restarts_to_turn_it_on(database):
    database.sql_instances[INSTANCE]["settings"]["backupConfiguration"]["binaryLogEnabled"] = False
    assert plan_effects("database", db_version="MYSQL_8_0") == {"backupConfiguration": Impact.RESTART}
    with pytest.raises(Exception, match="refused"):
        _run_refusing("database", db_version="MYSQL_8_0")
    assert database.mutating_requests() == []


def test_a_version_downgrade_is_impossible_and_says_what_to_do(database):
    from mlflow_gcp.errors import MlflowGcpError

    with pytest.raises(MlflowGcpError, match="cannot be downgraded") as caught:
        run_steps("database", db_version="MYSQL_5_7")
    assert "--db-version MYSQL_8_0" in caught.value.hint
    assert database.mutating_requests() == []


def test_another_network_for_the_instance_is_impossible(database):
    from mlflow_gcp.errors import MlflowGcpError

    ip = database.sql_instances[INSTANCE]["settings"]["ipConfiguration"]
    ip["privateNetwork"] = ip["privateNetwork"].replace("/networks/default", "/networks/elsewhere")
    with pytest.raises(MlflowGcpError, match="network elsewhere") as caught:
        run_steps("database", db_version="MYSQL_8_0")
    assert "--network elsewhere" in caught.value.hint
    assert database.mutating_requests() == []


@pytest.fixture
def connector(fake):
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    run_steps("network", "connector")
    fake.clear_log()
    return fake


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"connector_machine_type": "e2-standard-4"}, "machineType"),
        ({"connector_range": "10.8.0.16/28"}, "ipCidrRange"),
    ],
)
def test_connector_replacements_are_refused_without_approval(connector, settings, field):
    assert plan_effects("connector", **settings) == {field: Impact.REPLACE}
    with pytest.raises(Exception, match="refused VPC connector"):
        _run_refusing("connector", **settings)
    assert connector.mutating_requests() == []


def test_connector_bounds_change_in_place(connector):
    assert plan_effects("connector", connector_max_instances=5) == {"maxInstances": Impact.NONE}


def _run_refusing(step: str, **overrides):
    from mlflow_gcp.engine.base import StepContext
    from mlflow_gcp.engine.loop import run_step
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.steps import BY_NAME, load_prerequisites
    from tests.helpers import settings

    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), approve=refuse)
    load_prerequisites((step,), ctx)
    return run_step(BY_NAME[step], ctx)
