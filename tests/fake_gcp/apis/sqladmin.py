"""Cloud SQL Admin v1: instances, databases, users and `sql#operation`s (status PENDING/RUNNING/DONE,
`error.errors[]`).

Latency kinds: `sqladmin.create` (the instance is PENDING_CREATE until then), `sqladmin.update`,
`sqladmin.delete`, `sqladmin.database`, `sqladmin.user`. As Cloud SQL does: one operation at a time per
instance (a second one is 409 `operationInProgress`); names of deleted instances stay reserved (409
`instanceAlreadyExists` on insert); a private IP needs a private services connection on the network (the
create operation fails otherwise); shared-core tiers need the ENTERPRISE edition; deletion protection refuses
a delete; databases and users need a running instance. Test helpers: `fake.sql_instances`,
`fake.sql_databases[instance]`, `fake.sql_users[instance]` (with passwords), `fake.sql_reserved` (reserved
names), `fake.sql_fail_next(kind, message)` (the next operation of that kind ends in error).
"""

from __future__ import annotations

import copy
import re

from tests.fake_gcp.apis.compute import short_network
from tests.fake_gcp.server import ApiError, FakeGoogle, Request

INSTANCES = "/v1/projects/{project}/instances"
INSTANCE = INSTANCES + "/{instance}"
TIME = "2026-11-26T00:00:00.000Z"
VERSIONS = {"MYSQL_5_7": "MYSQL_5_7_44", "MYSQL_8_0": "MYSQL_8_0_41", "MYSQL_8_4": "MYSQL_8_4_4"}
SHARED_CORE = ("db-f1-micro", "db-g1-small")
# Character sets and collations Cloud SQL for MySQL 8.x accepts for a database (a subset).
COLLATIONS = {
    "utf8mb4": ("utf8mb4_0900_ai_ci", "utf8mb4_general_ci", "utf8mb4_unicode_ci", "utf8mb4_bin", "utf8mb4_0900_bin"),
    "utf8mb3": ("utf8mb3_general_ci", "utf8mb3_bin", "utf8mb3_unicode_ci"),
    "utf8": ("utf8_general_ci", "utf8_bin", "utf8_unicode_ci"),
    "latin1": ("latin1_swedish_ci", "latin1_bin"),
}
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


FAKE_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIFAKECAFORTESTSONLY\n-----END CERTIFICATE-----\n"


def instance_already_exists() -> ApiError:
    """A new instance's name (insert, clone, ...) that is in use, or was deleted less than a week ago."""
    return ApiError(
        409,
        "The Cloud SQL instance already exists. When you delete an instance, you can't reuse the name of the "
        "deleted instance until one week from the deletion date.",
        status="ALREADY_EXISTS",
        legacy_reason="instanceAlreadyExists",
    )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("_")[1:] if part.isdigit())


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def register(fake: FakeGoogle) -> None:
    instances: dict[str, dict] = fake.state.setdefault("sql_instances", {})
    databases: dict[str, dict[str, dict]] = fake.state.setdefault("sql_databases", {})
    users: dict[str, list[dict]] = fake.state.setdefault("sql_users", {})
    reserved: set[str] = fake.state.setdefault("sql_reserved", set())
    operations: dict[str, dict] = {}
    busy: dict[str, str] = {}  # instance -> running operation
    failures: dict[str, list[str]] = {}
    ip_count = iter(range(3, 250))

    def in_progress() -> ApiError:
        return ApiError(
            409,
            "Operation failed because another operation was already in progress. Try your request after the "
            "current operation is complete.",
            status="ABORTED",
            legacy_reason="operationInProgress",
        )

    def no_instance() -> ApiError:
        return ApiError(404, "The Cloud SQL instance does not exist.", legacy_reason="instanceDoesNotExist")

    def instance_of(req: Request) -> dict:
        instance = instances.get(req.params["instance"])
        if instance is None:
            raise no_instance()
        return instance

    def running(req: Request) -> dict:
        instance = instance_of(req)
        if instance["state"] != "RUNNABLE":
            raise ApiError(400, "Invalid request since instance is not running.", legacy_reason="invalid")
        return instance

    def operation(
        project: str, instance: str, op_type: str, kind: str, finish, *, lock: bool = True, on_error=None
    ) -> dict:
        if lock and instance in busy:
            raise in_progress()
        name = f"{fake.next_id()}-op-{op_type.lower()}"
        op = {
            "kind": "sql#operation",
            "targetLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{instance}",
            "status": "PENDING",
            "user": "someone@example.com",
            "insertTime": TIME,
            "operationType": op_type,
            "name": name,
            "targetId": instance,
            "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/operations/{name}",
            "targetProject": project,
        }
        operations[name] = op
        if lock:
            busy[instance] = name
        planned = failures.get(kind, [])
        message = planned.pop(0) if planned else None

        def complete() -> None:
            try:
                if message is not None:
                    raise ApiError(400, message, legacy_reason="INTERNAL_ERROR")
                finish()
            except ApiError as e:
                op["error"] = {
                    "kind": "sql#operationErrors",
                    "errors": [
                        {"kind": "sql#operationError", "code": e.body["errors"][0]["reason"], "message": str(e)}
                    ],
                }
                if on_error:
                    on_error()
            op["status"] = "DONE"
            op["startTime"] = op["endTime"] = TIME
            if busy.get(instance) == name:
                del busy[instance]

        op["status"] = "RUNNING"
        fake.after(kind, complete)
        fake.tick()
        return dict(op)

    def fail_next(kind: str, message: str) -> None:
        failures.setdefault(kind, []).append(message)

    def connection_range(network: str) -> str | None:
        connection = fake.state.get("sn_connections", {}).get(network)
        if not connection:
            return None
        address = fake.state.get("compute_addresses", {}).get(connection["reservedPeeringRanges"][0])
        return address["address"] if address else None

    def check_settings(settings: dict, edition_default: str = "ENTERPRISE") -> None:
        tier = settings.get("tier", "")
        edition = settings.get("edition", edition_default)
        if not tier:
            raise ApiError(400, "Invalid request: Tier is required.", legacy_reason="invalid")
        if edition == "ENTERPRISE_PLUS" and (tier in SHARED_CORE or not tier.startswith("db-perf-optimized")):
            raise ApiError(400, f"Invalid Tier ({tier}) for (ENTERPRISE_PLUS) Edition.", legacy_reason="invalid")
        ip = settings.get("ipConfiguration", {})
        if ip.get("ipv4Enabled") is False and not ip.get("privateNetwork"):
            raise ApiError(
                400,
                "Invalid request: At least one of Public IP or Private IP or PSC connectivity must be enabled.",
                legacy_reason="invalid",
            )

    # -- instances ----------------------------------------------------------------------------------------
    @fake.route("sqladmin", "GET", INSTANCE)
    def get_instance(req: Request):
        return instance_of(req)

    @fake.route("sqladmin", "GET", INSTANCES)
    def list_instances(req: Request):
        return {"items": list(instances.values())} if instances else {}

    @fake.route("sqladmin", "POST", INSTANCES)
    def insert(req: Request):
        body = req.json
        project, name = req.params["project"], body.get("name", "")
        if not _NAME.match(name) or len(name) > 84:
            raise ApiError(400, "Invalid request: instance name (" + name + ").", legacy_reason="invalid")
        if name in instances or name in reserved:
            raise instance_already_exists()
        version = body.get("databaseVersion", "MYSQL_8_0")
        if version not in VERSIONS:
            raise ApiError(400, f"Invalid request: Invalid database version {version}.", legacy_reason="invalid")
        settings = copy.deepcopy(body.get("settings", {}))
        check_settings(settings)
        region = body.get("region", "us-central1")
        network = short_network(settings.get("ipConfiguration", {}).get("privateNetwork", ""))
        instance = {
            "kind": "sql#instance",
            "state": "PENDING_CREATE",
            "databaseVersion": version,
            "settings": {
                "kind": "sql#settings",
                "settingsVersion": "1",
                "availabilityType": "ZONAL",
                "pricingPlan": "PER_USE",
                "replicationType": "SYNCHRONOUS",
                "activationPolicy": "ALWAYS",
                "dataDiskSizeGb": "10",
                "dataDiskType": "PD_SSD",
                "storageAutoResizeLimit": "0",
                "edition": "ENTERPRISE",
                "locationPreference": {"zone": f"{region}-b", "kind": "sql#locationPreference"},
                **settings,
            },
            "etag": "etag-1",
            "ipAddresses": [],
            "instanceType": "CLOUD_SQL_INSTANCE",
            "project": project,
            "serviceAccountEmailAddress": "p123456789012-abcdef@gcp-sa-cloud-sql.iam.gserviceaccount.com",
            "backendType": "SECOND_GEN",
            "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{name}",
            "connectionName": f"{project}:{region}:{name}",
            "name": name,
            "region": region,
            "gceZone": f"{region}-b",
            "createTime": TIME,
        }
        if "backupConfiguration" in instance["settings"]:
            instance["settings"]["backupConfiguration"] = {
                "kind": "sql#backupConfiguration",
                "startTime": "03:00",
                "transactionLogRetentionDays": 7,
                "backupRetentionSettings": {"retentionUnit": "COUNT", "retainedBackups": 7},
                **instance["settings"]["backupConfiguration"],
            }
        # The instance's own server CA (Cloud SQL's per-instance CA mode), as instances.get answers it.
        instance["serverCaCert"] = {
            "kind": "sql#sslCert",
            "certSerialNumber": "0",
            "cert": FAKE_CA_PEM,
            "commonName": "C=US,O=Google\\, Inc,CN=Google Cloud SQL Server CA,dnQualifier=fake",
            "instance": name,
        }
        instance["settings"].pop("ipConfiguration", None)
        instance["settings"]["ipConfiguration"] = {
            "ipv4Enabled": True,
            "requireSsl": False,
            "sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED",
            **settings.get("ipConfiguration", {}),
        }
        instances[name] = instance
        root_password = body.get("rootPassword")

        def finish():
            ip_config = instance["settings"]["ipConfiguration"]
            if network:
                start = connection_range(network)
                if start is None:
                    raise ApiError(
                        400,
                        "Failed to create subnetwork. Please create Service Networking connection with service "
                        f"'servicenetworking.googleapis.com' from consumer project '{project}' network '{network}' "
                        "again.",
                        legacy_reason="INTERNAL_ERROR",
                    )
                base = start.rsplit(".", 1)[0]
                instance["ipAddresses"].append({"type": "PRIVATE", "ipAddress": f"{base}.{next(ip_count)}"})
            if ip_config.get("ipv4Enabled", True):
                instance["ipAddresses"].append({"type": "PRIMARY", "ipAddress": f"34.77.0.{next(ip_count)}"})
            instance["state"] = "RUNNABLE"
            instance["databaseInstalledVersion"] = VERSIONS[version]
            databases[name] = {
                db: {"kind": "sql#database", "name": db, "charset": "utf8mb3", "collation": "utf8mb3_general_ci"}
                for db in ("mysql", "information_schema", "performance_schema", "sys")
            }
            users[name] = [{"name": "root", "host": "%", "password": root_password}]

        return operation(project, name, "CREATE", "sqladmin.create", finish, on_error=lambda: instances.pop(name, None))

    @fake.route("sqladmin", "PATCH", INSTANCE)
    def patch(req: Request):
        instance = instance_of(req)
        body = req.json
        if instance["state"] not in ("RUNNABLE", "STOPPED"):
            raise (
                in_progress()
                if req.params["instance"] in busy
                else ApiError(400, "Invalid request since instance is not running.", legacy_reason="invalid")
            )
        version = body.get("databaseVersion", instance["databaseVersion"])
        if _version_key(version) < _version_key(instance["databaseVersion"]):
            # An in-place major version upgrade is a patch of databaseVersion; there is no downgrade
            # (https://cloud.google.com/sql/docs/mysql/upgrade-major-db-version-inplace).
            raise ApiError(400, "Invalid request: the database version cannot be downgraded.", legacy_reason="invalid")
        settings = copy.deepcopy(instance["settings"])
        _merge(settings, body.get("settings", {}))
        check_settings(settings)
        if req.params["instance"] in busy:
            raise in_progress()

        def finish():
            instance["databaseVersion"] = version
            instance["settings"] = settings
            instance["settings"]["settingsVersion"] = str(int(instance["settings"]["settingsVersion"]) + 1)
            if settings["ipConfiguration"].get("ipv4Enabled") is False:
                instance["ipAddresses"] = [a for a in instance["ipAddresses"] if a["type"] == "PRIVATE"]

        return operation(req.params["project"], req.params["instance"], "UPDATE", "sqladmin.update", finish)

    @fake.route("sqladmin", "DELETE", INSTANCE)
    def delete(req: Request):
        instance = instance_of(req)
        name = req.params["instance"]
        if instance["settings"].get("deletionProtectionEnabled"):
            raise ApiError(
                400,
                "The instance is protected from deletion. Disable deletion protection on the instance and retry.",
                legacy_reason="invalid",
            )

        def finish():
            instances.pop(name, None)
            databases.pop(name, None)
            users.pop(name, None)
            reserved.add(name)

        op = operation(req.params["project"], name, "DELETE", "sqladmin.delete", finish)
        instance["state"] = "PENDING_DELETE"
        return op

    # -- databases ----------------------------------------------------------------------------------------
    @fake.route("sqladmin", "GET", INSTANCE + "/databases/{database}")
    def get_database(req: Request):
        instance = running(req)
        found = databases.get(instance["name"], {}).get(req.params["database"])
        if found is None:
            raise ApiError(404, "Not Found", legacy_reason="notFound")
        return {
            **found,
            "instance": instance["name"],
            "project": req.params["project"],
            "selfLink": f"{instance['selfLink']}/databases/{found['name']}",
            "etag": "db-etag",
        }

    @fake.route("sqladmin", "GET", INSTANCE + "/databases")
    def list_databases(req: Request):
        instance = running(req)
        return {"kind": "sql#databasesList", "items": list(databases.get(instance["name"], {}).values())}

    @fake.route("sqladmin", "POST", INSTANCE + "/databases")
    def insert_database(req: Request):
        instance = running(req)
        body = req.json
        name = body.get("name", "")
        if not re.match(r"^[A-Za-z0-9_$-]{1,64}$", name):
            raise ApiError(400, f"Invalid request: Invalid database name {name!r}.", legacy_reason="invalid")
        charset = body.get("charset", "utf8mb3")
        collation = body.get("collation") or COLLATIONS.get(charset, ("",))[0]
        if charset not in COLLATIONS or collation not in COLLATIONS[charset]:
            raise ApiError(
                400, f"Invalid request: Invalid charset {charset} or collation {collation}.", legacy_reason="invalid"
            )
        if instance["databaseVersion"] == "MYSQL_5_7" and "0900" in collation:
            raise ApiError(400, f"Invalid request: Unknown collation {collation}.", legacy_reason="invalid")

        def finish():
            if name in databases[instance["name"]]:
                raise ApiError(400, f"Error 1007 (HY000): Can't create database '{name}'; database exists")
            databases[instance["name"]][name] = {
                "kind": "sql#database",
                "name": name,
                "charset": charset,
                "collation": collation,
            }

        return operation(req.params["project"], instance["name"], "CREATE_DATABASE", "sqladmin.database", finish)

    @fake.route("sqladmin", "PATCH", INSTANCE + "/databases/{database}")
    def patch_database(req: Request):
        instance = running(req)
        found = databases[instance["name"]].get(req.params["database"])
        if found is None:
            raise ApiError(404, "Not Found", legacy_reason="notFound")
        body = req.json

        def finish():
            found.update({k: body[k] for k in ("charset", "collation") if k in body})

        return operation(req.params["project"], instance["name"], "UPDATE_DATABASE", "sqladmin.database", finish)

    @fake.route("sqladmin", "DELETE", INSTANCE + "/databases/{database}")
    def delete_database(req: Request):
        instance = running(req)
        db = req.params["database"]
        if db not in databases[instance["name"]]:
            raise ApiError(404, "Not Found", legacy_reason="notFound")
        return operation(
            req.params["project"],
            instance["name"],
            "DELETE_DATABASE",
            "sqladmin.database",
            lambda: databases[instance["name"]].pop(db, None),
        )

    # -- users --------------------------------------------------------------------------------------------
    def public_user(instance: dict, user: dict, project: str) -> dict:
        return {
            "kind": "sql#user",
            "etag": "user-etag",
            "name": user["name"],
            "host": user["host"],
            "instance": instance["name"],
            "project": project,
        }

    @fake.route("sqladmin", "GET", INSTANCE + "/users")
    def list_users(req: Request):
        instance = running(req)
        return {
            "kind": "sql#usersList",
            "items": [public_user(instance, u, req.params["project"]) for u in users.get(instance["name"], [])],
        }

    @fake.route("sqladmin", "POST", INSTANCE + "/users")
    def insert_user(req: Request):
        instance = running(req)
        body = req.json
        name, host = body.get("name", ""), body.get("host") or "%"
        if not name:
            raise ApiError(400, "Invalid request: user name is required.", legacy_reason="invalid")

        def finish():
            if any(u["name"] == name and u["host"] == host for u in users[instance["name"]]):
                raise ApiError(400, f"Error 1396 (HY000): Operation CREATE USER failed for '{name}'@'{host}'")
            users[instance["name"]].append({"name": name, "host": host, "password": body.get("password")})

        return operation(req.params["project"], instance["name"], "CREATE_USER", "sqladmin.user", finish)

    @fake.route("sqladmin", "PUT", INSTANCE + "/users")
    def update_user(req: Request):
        instance = running(req)
        name, host = req.query.get("name", ""), req.query.get("host") or "%"
        body = req.json

        def finish():
            for user in users[instance["name"]]:
                if user["name"] == name and user["host"] == host:
                    user["password"] = body.get("password", user["password"])
                    return
            raise ApiError(404, "Not Found", legacy_reason="notFound")

        return operation(req.params["project"], instance["name"], "UPDATE_USER", "sqladmin.user", finish)

    # -- operations ---------------------------------------------------------------------------------------
    @fake.route("sqladmin", "GET", "/v1/projects/{project}/operations/{operation}")
    def get_operation(req: Request):
        op = operations.get(req.params["operation"])
        if op is None:
            raise ApiError(
                404,
                f"The Cloud SQL operation {req.params['operation']} does not exist.",
                legacy_reason="operationDoesNotExist",
            )
        return dict(op)

    def set_state(name: str, state: str) -> None:
        """Test helper: put an instance in a state (e.g. MAINTENANCE) until `sqladmin.maintenance` latency."""
        instance = instances[name]
        previous = instance["state"]
        instance["state"] = state

        def back():
            instance["state"] = previous

        fake.after("sqladmin.maintenance", back)

    fake.sql_instances = instances
    fake.sql_databases = databases
    fake.sql_users = users
    fake.sql_reserved = reserved
    fake.sql_fail_next = fail_next
    fake.sql_set_state = set_state
    fake.sql_busy = busy
    # For tests/fake_gcp/apis/sqladmin_backups.py: backups, restores and clones run as operations of this API.
    fake.sql_operation = operation
    fake.sql_operations = operations
    fake.sql_connection_range = connection_range
    fake.sql_next_ip = lambda: next(ip_count)
