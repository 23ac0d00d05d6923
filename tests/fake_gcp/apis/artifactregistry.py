"""Artifact Registry v1: repositories (create, get, list, patch, delete), packages, versions and tags of Docker
images, long-running operations and repository IAM policies.

A repository appears when its create operation completes (`artifactregistry.create` latency); deleting a
repository deletes its images (`artifactregistry.delete`). Images are pushed by the Cloud Build fake through
`fake.registry_push(image_uri, digest)`; `fake.registry_tags(repository)` lists what a test can see, and
`fake.registry_holds(image_uri)` whether an image can be pulled (Cloud Run's revisions ask it: apis/run.py).
"""

from __future__ import annotations

import json
import re
import uuid

from tests.fake_gcp.server import ApiError, FakeGoogle, Request, already_exists, not_found, route_regional_operations

TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1."
REPOSITORIES = "/v1/projects/{project}/locations/{location}/repositories"
REPOSITORY = REPOSITORIES + "/{repository}"
PACKAGE = REPOSITORY + "/packages/{package}"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY = "type.googleapis.com/google.protobuf.Empty"
TIME = "2026-11-26T00:00:00.000000Z"
_REPOSITORY_ID = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
# REGION-docker.pkg.dev/PROJECT/REPOSITORY/PACKAGE:TAG
_IMAGE = re.compile(
    r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/"
    r"(?P<package>[^:@]+):(?P<tag>[\w][\w.-]{0,127})$"
)


def normalized(raw: bytes, message_name: str) -> dict:
    """The request body as Google reads it: integer enums (GAPIC REST sends them) become names; an unknown
    field is a 400."""
    from google.cloud import artifactregistry_v1
    from google.protobuf import json_format

    cls = getattr(artifactregistry_v1, message_name)
    try:
        message = json_format.Parse(raw or b"{}", cls.pb(cls()))
    except json_format.ParseError as e:
        raise ApiError(400, f"Invalid JSON payload received. {e}") from e
    return json_format.MessageToDict(message)


def register(fake: FakeGoogle) -> None:
    repositories: dict[str, dict] = fake.state.setdefault("ar_repositories", {})
    # repository name -> package id -> {"package": {...}, "versions": {digest: {...}}, "tags": {tag: {...}}}
    packages: dict[str, dict[str, dict]] = fake.state.setdefault("ar_packages", {})
    operations: dict[str, dict] = fake.state.setdefault("ar_operations", {})
    pending: set[str] = set()

    def repo_name(req: Request, repository: str | None = None) -> str:
        p = req.params
        return f"projects/{p['project']}/locations/{p['location']}/repositories/{repository or p['repository']}"

    def existing(req: Request) -> dict:
        name = repo_name(req)
        if name not in repositories:
            raise not_found(f'Repository "{name}"')
        return repositories[name]

    def package_of(req: Request) -> dict:
        name = existing(req)["name"]
        found = packages.get(name, {}).get(req.params["package"])
        if found is None:
            raise not_found(f'Package "{name}/packages/{req.params["package"]}"')
        return found

    def start(location_prefix: str, finish, response_type: str, kind: str) -> dict:
        name = f"{location_prefix}/operations/{uuid.uuid4()}"
        op = {
            "name": name,
            "done": False,
            "metadata": {"@type": TYPE + "OperationMetadata"},
        }
        operations[name] = op

        def complete() -> None:
            try:
                response = finish() or {}
                op["response"] = {"@type": response_type, **response}
            except ApiError as e:
                op["error"] = {"code": 9, "message": e.body["message"]}
            op["done"] = True

        fake.after(kind, complete)
        fake.tick()
        return dict(op)

    # -- repositories ------------------------------------------------------------------------------------
    @fake.route("artifactregistry", "POST", REPOSITORIES)
    def create(req: Request):
        repository_id = req.query.get("repositoryId", "")
        if not _REPOSITORY_ID.match(repository_id) or len(repository_id) > 63:
            raise ApiError(400, f'Invalid repository id "{repository_id}".')
        name = repo_name(req, repository_id)
        if name in repositories or name in pending:
            raise already_exists(f'Repository "{name}"')
        body = normalized(req.raw, "Repository")
        if body.get("format") in (None, "FORMAT_UNSPECIFIED"):
            raise ApiError(400, "Repository format must be specified.")
        repository = {
            "name": name,
            "format": body["format"],
            "description": body.get("description", ""),
            "labels": body.get("labels", {}),
            "createTime": TIME,
            "updateTime": TIME,
            "mode": body.get("mode", "STANDARD_REPOSITORY"),
            "sizeBytes": "0",
            "registryUri": f"{req.params['location']}-docker.pkg.dev/{req.params['project']}/{repository_id}",
        }
        if not repository["description"]:
            del repository["description"]
        pending.add(name)

        def finish() -> dict:
            pending.discard(name)
            repositories[name] = repository
            packages.setdefault(name, {})
            return dict(repository)

        prefix = f"projects/{req.params['project']}/locations/{req.params['location']}"
        return start(prefix, finish, TYPE + "Repository", "artifactregistry.create")

    @fake.route("artifactregistry", "GET", REPOSITORY)
    def get(req: Request):
        return existing(req)

    @fake.route("artifactregistry", "GET", REPOSITORIES)
    def list_repositories(req: Request):
        prefix = f"projects/{req.params['project']}/locations/{req.params['location']}/repositories/"
        return {"repositories": [r for n, r in repositories.items() if n.startswith(prefix)]}

    @fake.route("artifactregistry", "PATCH", REPOSITORY)
    def patch(req: Request):
        repository = existing(req)
        body = normalized(req.raw, "Repository")
        mask = [m for m in req.query.get("updateMask", "").split(",") if m]
        for field in mask or ["description", "labels"]:
            if field in ("format", "name", "mode"):
                raise ApiError(400, f"Field {field} cannot be updated.")
            if field in body:
                repository[field] = body[field]
            else:
                repository.pop(field, None)
        repository["updateTime"] = TIME
        return repository

    @fake.route("artifactregistry", "DELETE", REPOSITORY)
    def delete(req: Request):
        name = existing(req)["name"]

        def finish() -> None:
            repositories.pop(name, None)
            packages.pop(name, None)
            fake.policies.pop(name, None)

        return start(name.split("/repositories/")[0], finish, EMPTY, "artifactregistry.delete")

    @fake.route("artifactregistry", "GET", REPOSITORY + ":getIamPolicy")
    def get_iam_policy(req: Request):
        return fake.get_policy(existing(req)["name"])

    @fake.route("artifactregistry", "POST", REPOSITORY + ":setIamPolicy")
    def set_iam_policy(req: Request):
        return fake.set_policy(existing(req)["name"], req.json.get("policy", {}))

    # -- packages, versions, tags ------------------------------------------------------------------------
    @fake.route("artifactregistry", "GET", REPOSITORY + "/packages")
    def list_packages(req: Request):
        name = existing(req)["name"]
        return {"packages": [p["package"] for p in packages.get(name, {}).values()]}

    @fake.route("artifactregistry", "GET", PACKAGE)
    def get_package(req: Request):
        return package_of(req)["package"]

    @fake.route("artifactregistry", "DELETE", PACKAGE)
    def delete_package(req: Request):
        name = existing(req)["name"]
        package_of(req)

        def finish() -> None:
            packages.get(name, {}).pop(req.params["package"], None)

        return start(name.split("/repositories/")[0], finish, EMPTY, "artifactregistry.delete")

    @fake.route("artifactregistry", "GET", PACKAGE + "/tags")
    def list_tags(req: Request):
        return {"tags": list(package_of(req)["tags"].values())}

    @fake.route("artifactregistry", "GET", PACKAGE + "/tags/{tag}")
    def get_tag(req: Request):
        package = package_of(req)
        tag = package["tags"].get(req.params["tag"])
        if tag is None:
            raise not_found(f'Tag "{package["package"]["name"]}/tags/{req.params["tag"]}"')
        return tag

    @fake.route("artifactregistry", "DELETE", PACKAGE + "/tags/{tag}")
    def delete_tag(req: Request):
        package = package_of(req)
        if package["tags"].pop(req.params["tag"], None) is None:
            raise not_found(f'Tag "{package["package"]["name"]}/tags/{req.params["tag"]}"')
        return {}

    @fake.route("artifactregistry", "GET", PACKAGE + "/versions/{version=**}")
    def get_version(req: Request):
        package = package_of(req)
        version = package["versions"].get(req.params["version"])
        if version is None:
            raise not_found(f'Version "{package["package"]["name"]}/versions/{req.params["version"]}"')
        return version

    @fake.route("artifactregistry", "DELETE", PACKAGE + "/versions/{version=**}")
    def delete_version(req: Request):
        name = existing(req)["name"]
        package = package_of(req)
        digest = req.params["version"]
        if digest not in package["versions"]:
            raise not_found(f'Version "{package["package"]["name"]}/versions/{digest}"')
        tagged = [t for t, v in package["tags"].items() if v["version"].endswith(f"/versions/{digest}")]
        if tagged and req.query.get("force") != "true":
            raise ApiError(
                400,
                f"Version {digest} has tags {tagged}; delete them first or use force.",
                status="FAILED_PRECONDITION",
            )

        def finish() -> None:
            for tag in tagged:
                package["tags"].pop(tag, None)
            package["versions"].pop(digest, None)
            if not package["versions"]:
                packages.get(name, {}).pop(req.params["package"], None)

        return start(name.split("/repositories/")[0], finish, EMPTY, "artifactregistry.delete")

    route_regional_operations(fake, "artifactregistry", "v1", operations)

    # -- helpers for the Cloud Build fake and tests ------------------------------------------------------
    def push(image: str, digest: str) -> str | None:
        """Store a pushed image; returns an error message (as docker push prints it) or None."""
        match = _IMAGE.match(image)
        if not match:
            return f"invalid reference format: {image}"
        g = match.groupdict()
        name = f"projects/{g['project']}/locations/{g['location']}/repositories/{g['repository']}"
        if name not in repositories:
            return f'name unknown: Repository "{g["repository"]}" not found'
        package_name = f"{name}/packages/{g['package']}"
        package = packages.setdefault(name, {}).setdefault(
            g["package"],
            {
                "package": {"name": package_name, "createTime": TIME, "updateTime": TIME},
                "versions": {},
                "tags": {},
            },
        )
        package["versions"][digest] = {
            "name": f"{package_name}/versions/{digest}",
            "createTime": TIME,
            "updateTime": TIME,
            "metadata": {
                "imageSizeBytes": "123456789",
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            },
        }
        package["tags"][g["tag"]] = {
            "name": f"{package_name}/tags/{g['tag']}",
            "version": f"{package_name}/versions/{digest}",
        }
        return None

    def tags(repository: str, project: str = "demo-project", location: str = "europe-west1") -> dict[str, str]:
        """Test helper: {"package:tag": version name} of a repository."""
        name = f"projects/{project}/locations/{location}/repositories/{repository}"
        return {
            f"{package_id}:{tag}": value["version"]
            for package_id, package in packages.get(name, {}).items()
            for tag, value in package["tags"].items()
        }

    def repository(name: str, project: str = "demo-project", location: str = "europe-west1") -> dict | None:
        """Test helper: the stored repository, or None."""
        found = repositories.get(f"projects/{project}/locations/{location}/repositories/{name}")
        return json.loads(json.dumps(found)) if found else None

    def holds(image: str) -> bool | None:
        """Whether the registry holds the image `REGION-docker.pkg.dev/...:TAG` (or `@sha256:...`); None when it is
        not an Artifact Registry image (it cannot tell)."""
        base, _, digest = image.partition("@")
        match = _IMAGE.match(base if not digest else f"{base}:untagged")
        if not match:
            return None
        g = match.groupdict()
        name = f"projects/{g['project']}/locations/{g['location']}/repositories/{g['repository']}"
        package = packages.get(name, {}).get(g["package"])
        if package is None:
            return False
        return digest in package["versions"] if digest else g["tag"] in package["tags"]

    fake.registry_push = push
    fake.registry_holds = holds
    fake.registry_tags = tags
    fake.registry_repository = repository
