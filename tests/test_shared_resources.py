"""The Secret and IamBinding resources against the fake Secret Manager."""

from google.api_core import exceptions as gexc

from mlflow_gcp.config import Settings
from mlflow_gcp.engine.base import StepContext, StepResult
from mlflow_gcp.engine.loop import _run_resource
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources.iam import IamBinding, proto_policy_io
from mlflow_gcp.resources.secret import Secret
from tests.helpers import ALL_APIS_ENABLED


def context() -> StepContext:
    settings = Settings(project="demo-project")
    return StepContext(settings=settings, clients=Clients(settings.project), step="test")


def test_secret_is_made_once_and_never_replaced(fake):
    fake.enabled |= ALL_APIS_ENABLED
    ctx = context()
    values = iter(["first", "second"])
    secret = Secret(ctx, "mysql-credentials", lambda: next(values))
    _run_resource(secret, ctx, StepResult("test"))
    assert fake.secret_value("mysql-credentials") == "first"
    _run_resource(Secret(ctx, "mysql-credentials", lambda: "other"), ctx, StepResult("test"))
    assert fake.secret_value("mysql-credentials") == "first"
    assert ctx.secret_values["mysql-credentials"] == "first"


def test_secret_without_version_gets_one(fake):
    fake.enabled |= ALL_APIS_ENABLED
    ctx = context()
    ctx.clients.secrets().create_secret(
        parent="projects/demo-project", secret_id="s", secret={"replication": {"automatic": {}}}
    )
    result = StepResult("test")
    _run_resource(Secret(ctx, "s", lambda: "v"), ctx, result)
    assert result.changes[0].action == "update"
    assert fake.secret_value("s") == "v"


def test_binding_survives_a_concurrent_policy_write(fake):
    fake.enabled |= ALL_APIS_ENABLED
    ctx = context()
    client = ctx.clients.secrets()
    client.create_secret(parent="projects/demo-project", secret_id="s", secret={"replication": {"automatic": {}}})
    get, set_ = proto_policy_io(client, "projects/demo-project/secrets/s")
    writes = []

    def racing_set(policy):
        if not writes:  # someone else writes between our read and our write
            fake.set_policy(
                "projects/demo-project/secrets/s",
                {"bindings": [{"role": "roles/viewer", "members": ["user:x@example.com"]}]},
            )
        writes.append(policy)
        set_(policy)

    binding = IamBinding(ctx, "secret s", "roles/secretmanager.secretAccessor", "serviceAccount:a@b", get, racing_set)
    _run_resource(binding, ctx, StepResult("test"))
    assert len(writes) == 2
    assert fake.members("projects/demo-project/secrets/s", "roles/viewer") == ["user:x@example.com"]
    assert fake.members("projects/demo-project/secrets/s", "roles/secretmanager.secretAccessor") == [
        "serviceAccount:a@b"
    ]
    assert binding.read() is not None
    try:
        client.get_secret(name="projects/demo-project/secrets/missing")
    except gexc.NotFound:
        pass
