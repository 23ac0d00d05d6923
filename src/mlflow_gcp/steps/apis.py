"""Step `apis`: enable the Google APIs the deployment uses. Already enabled → nothing sent."""

from __future__ import annotations

from collections.abc import Iterator

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.operations import wait_gapic

REQUIRED_APIS = (
    "serviceusage.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "run.googleapis.com",
    "sqladmin.googleapis.com",
    "secretmanager.googleapis.com",
    "vpcaccess.googleapis.com",
    "servicenetworking.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "storage.googleapis.com",
)


class EnabledApis(Resource):
    kind = "Google APIs"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, "of the deployment")
        self._client = ctx.clients.service_usage()
        self.parent = f"projects/{ctx.project}"

    @property
    def label(self) -> str:
        return "Google APIs"

    def read(self) -> set[str]:
        response = retry.call(
            lambda: self._client.batch_get_services(
                request={
                    "parent": self.parent,
                    "names": [f"{self.parent}/services/{api}" for api in REQUIRED_APIS],
                }
            )
        )
        return {s.config.name or s.name.rsplit("/", 1)[-1] for s in response.services if s.state.name == "ENABLED"}

    def drift(self, current: set[str]) -> list[str]:
        return [api.removesuffix(".googleapis.com") for api in REQUIRED_APIS if api not in current]

    def create(self) -> None:  # the set of APIs always exists; update enables the missing ones
        raise AssertionError("unreachable")

    def update(self, current: set[str], fields: list[str]) -> None:
        services = [f"{name}.googleapis.com" for name in fields]
        operation = retry.call(
            lambda: self._client.batch_enable_services(request={"parent": self.parent, "service_ids": services})
        )
        wait_gapic(operation, what=f"Enabling the APIs {', '.join(fields)}", timeout=600)
        self.ctx.enabled_now.update(services)

    def details(self, current: set[str]) -> dict[str, str]:
        return {"enabled": f"{len(current & set(REQUIRED_APIS))}/{len(REQUIRED_APIS)}"}


def resources(ctx: StepContext) -> Iterator[Resource]:
    yield EnabledApis(ctx)
