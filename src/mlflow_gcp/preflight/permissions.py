"""The IAM permissions each step needs on the project, and the predefined role that grants them (the roles
listed under Prerequisites in the README). Preflight asks `projects.testIamPermissions` for exactly these.

Sources: the IAM permissions reference (https://cloud.google.com/iam/docs/permissions-reference) and the
predefined roles reference (https://cloud.google.com/iam/docs/understanding-roles).
"""

from __future__ import annotations

from collections.abc import Iterable

from mlflow_gcp.config import Settings

SERVICE_USAGE = "roles/serviceusage.serviceUsageAdmin"
NETWORK = "roles/compute.networkAdmin"
SERVICE_NETWORKING = "roles/servicenetworking.networksAdmin"
CLOUD_SQL = "roles/cloudsql.admin"
VPC_ACCESS = "roles/vpcaccess.admin"
SA_ADMIN = "roles/iam.serviceAccountAdmin"
SA_USER = "roles/iam.serviceAccountUser"
STORAGE = "roles/storage.admin"
SECRETS = "roles/secretmanager.admin"
REGISTRY = "roles/artifactregistry.admin"
BUILDS = "roles/cloudbuild.builds.editor"
RUN = "roles/run.admin"
PROJECT_IAM = "roles/resourcemanager.projectIamAdmin"

# The permission → the role that grants it, in the order the roles are listed.
ROLE_OF: dict[str, str] = {}
for _role, _permissions in (
    (SERVICE_USAGE, ("serviceusage.services.get", "serviceusage.services.enable", "serviceusage.operations.get")),
    (NETWORK, ("compute.networks.get", "compute.networks.create", "compute.globalAddresses.get",
               "compute.globalAddresses.create", "compute.globalOperations.get")),
    (SERVICE_NETWORKING, ("servicenetworking.services.addPeering", "servicenetworking.services.get")),
    (CLOUD_SQL, ("cloudsql.instances.create", "cloudsql.instances.get", "cloudsql.instances.update",
                 "cloudsql.databases.create", "cloudsql.databases.get", "cloudsql.users.create",
                 "cloudsql.users.list", "cloudsql.users.update")),
    (VPC_ACCESS, ("vpcaccess.connectors.create", "vpcaccess.connectors.get", "vpcaccess.operations.get")),
    (SA_ADMIN, ("iam.serviceAccounts.create", "iam.serviceAccounts.get", "iam.serviceAccounts.getIamPolicy",
                "iam.serviceAccounts.setIamPolicy")),
    (SA_USER, ("iam.serviceAccounts.actAs",)),
    (STORAGE, ("storage.buckets.create", "storage.buckets.get", "storage.buckets.update",
               "storage.buckets.getIamPolicy", "storage.buckets.setIamPolicy", "storage.objects.create",
               "storage.objects.get")),
    (SECRETS, ("secretmanager.secrets.create", "secretmanager.secrets.get", "secretmanager.secrets.getIamPolicy",
               "secretmanager.secrets.setIamPolicy", "secretmanager.versions.add", "secretmanager.versions.get",
               "secretmanager.versions.access")),
    (REGISTRY, ("artifactregistry.repositories.create", "artifactregistry.repositories.get",
                "artifactregistry.repositories.update", "artifactregistry.repositories.getIamPolicy",
                "artifactregistry.repositories.setIamPolicy", "artifactregistry.tags.get")),
    (BUILDS, ("cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.list")),
    (RUN, ("run.services.create", "run.services.get", "run.services.update", "run.services.getIamPolicy",
           "run.services.setIamPolicy", "run.operations.get")),
    (PROJECT_IAM, ("resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy")),
):  # fmt: skip
    for _permission in _permissions:
        ROLE_OF[_permission] = _role

# The roles each step needs (what it reads and writes, including the secrets and buckets it touches).
STEP_ROLES: dict[str, tuple[str, ...]] = {
    "apis": (SERVICE_USAGE,),
    "network": (NETWORK, SERVICE_NETWORKING),
    "database": (CLOUD_SQL, SECRETS),
    "connector": (VPC_ACCESS,),
    "service-account": (SA_ADMIN,),
    "bucket": (STORAGE,),
    "secrets": (SECRETS,),
    # The build account: made (SA_ADMIN), named by the build (SA_USER: actAs), granted logs on the project.
    "image": (REGISTRY, BUILDS, STORAGE, SA_ADMIN, SA_USER, PROJECT_IAM),
    "deploy": (RUN, SA_USER, SECRETS),
}


ROLE_STEPS = tuple(STEP_ROLES)
UP_PERMISSIONS = frozenset(ROLE_OF)  # what `up` uses; `down`'s deletes are added to ROLE_OF below


def permissions_for(steps: Iterable[str], settings: Settings) -> list[str]:
    """The permissions `steps` need, in a stable order. The default network exists: creating one is only needed
    for a custom network."""
    roles = {role for step in steps for role in STEP_ROLES.get(step, ())}
    wanted = [p for p, role in ROLE_OF.items() if role in roles and p in UP_PERMISSIONS]
    if settings.network == "default":
        wanted = [p for p in wanted if p != "compute.networks.create"]
    return wanted


# What `down` deletes, and with --delete-data the data too (teardown order: service, image repository, connector,
# grants, service account; then the database, the bucket with its objects, the secrets).
DOWN_DELETES = (
    ("run.services.delete", RUN),
    ("artifactregistry.repositories.delete", REGISTRY),
    ("vpcaccess.connectors.delete", VPC_ACCESS),
    ("iam.serviceAccounts.delete", SA_ADMIN),
)
DATA_DELETES = (
    ("cloudsql.instances.delete", CLOUD_SQL),
    ("storage.buckets.delete", STORAGE),
    ("storage.objects.list", STORAGE),
    ("storage.objects.delete", STORAGE),
    ("secretmanager.secrets.delete", SECRETS),
)
for _permission, _role in DOWN_DELETES + DATA_DELETES:
    ROLE_OF.setdefault(_permission, _role)
READS = (".get", ".list", ".getIamPolicy")


def down_permissions(settings: Settings, *, delete_data: bool) -> list[str]:
    """`down` reads every step (as status does), removes the grants (setIamPolicy) and deletes."""
    every = permissions_for(ROLE_STEPS, settings)
    wanted = [p for p in every if p.endswith(READS) or p.endswith(".setIamPolicy")]
    wanted += [p for p, _ in DOWN_DELETES + (DATA_DELETES if delete_data else ())]
    if delete_data:
        wanted.append("cloudsql.instances.update")  # deletion protection goes off first
    return list(dict.fromkeys(wanted))


ACT_AS = "iam.serviceAccounts.actAs"


def act_as_accounts(steps: Iterable[str], settings: Settings) -> list[str]:
    """The service accounts `steps` act as (the build runs as one, the service as the other): actAs granted on
    these accounts themselves serves as well as on the project."""
    steps = set(steps)
    accounts = [settings.build_service_account_email] if "image" in steps else []
    return accounts + ([settings.service_account_email] if "deploy" in steps else [])


def missing_by_role(wanted: Iterable[str], granted: set[str]) -> dict[str, list[str]]:
    """The permissions of `wanted` not in `granted`, under the role that grants them."""
    missing: dict[str, list[str]] = {}
    for permission in wanted:
        if permission not in granted:
            missing.setdefault(ROLE_OF.get(permission, "a role"), []).append(permission)
    return missing
