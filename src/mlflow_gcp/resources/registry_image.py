"""Whether an image a revision would start from is still in Artifact Registry (issue 24): deleted by hand or by a
cleanup policy, Cloud Run cannot start a revision of it. `credentials rotate` keeps the image the server runs, and an
upgrade's roll-back deploys it again: both ask before they change anything."""

from __future__ import annotations

import re
from typing import Any

# REGION-docker.pkg.dev/PROJECT/REPOSITORY/PACKAGE[:TAG][@sha256:DIGEST]
_REGISTRY_IMAGE = re.compile(
    r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/(?P<package>[^:@]+)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]+))?$"
)


def registry_name(image: str) -> str | None:
    """The Artifact Registry resource of an image (its version by digest, else its tag); None for an image
    elsewhere (another registry: not checked)."""
    from urllib.parse import quote

    match = _REGISTRY_IMAGE.match(image)
    if not match or not (match["tag"] or match["digest"]):
        return None
    package = (
        f"projects/{match['project']}/locations/{match['location']}/repositories/{match['repository']}/packages/"
        + quote(match["package"], safe="")
    )
    return f"{package}/versions/{match['digest']}" if match["digest"] else f"{package}/tags/{match['tag']}"


def image_gone(clients: Any, image: str) -> bool:
    """True only when Artifact Registry answers that it does not hold the image (404). An image elsewhere, or a
    registry this caller cannot read (a permission, the API), is not known to be gone: False, and the rollout says
    it if it cannot pull."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp import retry

    name = registry_name(image)
    if name is None:
        return False
    client = clients.artifact_registry()
    get = client.get_version if "/versions/" in name else client.get_tag
    try:
        retry.call(lambda: get(name=name))
    except gexc.NotFound:
        return True
    except gexc.GoogleAPICallError:
        return False
    return False
