"""The server image's build context (`container/`): where it is, which files it holds, their hash (the image
tag, so an unchanged context is not rebuilt) and the .tar.gz Cloud Build receives.

The context directory is, in order: $MLFLOW_GCP_CONTAINER_DIR; the repository's `container/` next to `src/`
(editable install); `<sys.prefix>/share/mlflow-gcp/container` (installed as data files).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

from mlflow_gcp.errors import MlflowGcpError

CONTAINER_DIR_ENV = "MLFLOW_GCP_CONTAINER_DIR"
TAG_LENGTH = 20
# Never part of an image, whatever .dockerignore says.
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def container_dir() -> Path:
    """The build context directory; an error with a hint when there is none."""
    candidates: list[Path] = []
    configured = os.environ.get(CONTAINER_DIR_ENV, "").strip()
    if configured:
        candidates.append(Path(configured).expanduser())
    else:
        candidates.append(Path(__file__).resolve().parents[2] / "container")
        candidates.append(Path(sys.prefix) / "share" / "mlflow-gcp" / "container")
    for candidate in candidates:
        if (candidate / "Dockerfile").is_file():
            return candidate
    where = ", ".join(str(c) for c in candidates)
    raise MlflowGcpError(
        f"The server image's build context (a directory with a Dockerfile) was not found; looked in {where}.",
        f"Set {CONTAINER_DIR_ENV} to the `container/` directory of mlflow-gcp, or reinstall the package.",
    )


def _patterns(root: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) pairs of .dockerignore, in order."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = os.path.normpath(pattern).replace(os.sep, "/").lstrip("/")
        if pattern and pattern != ".":
            out.append((negated, pattern))
    return out


def _matches(relative: str, pattern: str) -> bool:
    """Docker's rule, simply: a pattern matches the path or one of its parent directories; `**/` at the start
    also matches at the root."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    candidates = [pattern]
    if pattern.startswith("**/"):
        candidates.append(pattern[3:])
    return any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in candidates)


def is_ignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    ignored = False
    for negated, pattern in patterns:
        if _matches(relative, pattern):
            ignored = not negated
    return ignored


def context_files(root: Path) -> list[str]:
    """The relative paths (with `/`) of the files sent to the build, sorted. The Dockerfile is always sent."""
    patterns = _patterns(root)
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        base = Path(directory).relative_to(root)
        for name in names:
            relative = (base / name).as_posix()
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            if relative != "Dockerfile" and is_ignored(relative, patterns):
                continue
            files.append(relative)
    return sorted(files)


def context_hash(root: Path) -> str:
    """sha256 over the sorted relative paths and file bytes; its first 20 hex characters are the image tag."""
    digest = hashlib.sha256()
    for relative in context_files(root):
        data = (root / relative).read_bytes()
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(str(len(data)).encode("ascii") + b"\0")
        digest.update(data)
    return digest.hexdigest()[:TAG_LENGTH]


def pack(root: Path) -> bytes:
    """The context as a .tar.gz; the same files give the same bytes (fixed times and owners)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for relative in context_files(root):
            path = root / relative
            data = path.read_bytes()
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressed:
        compressed.write(raw.getvalue())
    return out.getvalue()


def mlflow_pin(root: Path) -> str | None:
    """The MLflow version the context's requirements.txt pins (`mlflow[auth]==3.17.2`), or None."""
    import re

    path = root / "requirements.txt"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\s*mlflow(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*(?:#.*)?$", line)
        if found:
            return found.group(1)
    return None


def image_tag(root: Path, mlflow_version: str = "") -> str:
    """The image's tag: the context's hash; with an MLflow version other than the context's pin (the
    `mlflow-version` setting, passed to the build as MLFLOW_VERSION), a hash of both: another image."""
    tag = context_hash(root)
    if not mlflow_version or mlflow_version == mlflow_pin(root):
        return tag
    return hashlib.sha256(f"{tag}\0mlflow=={mlflow_version}".encode()).hexdigest()[:TAG_LENGTH]


def requirements_for(root: Path, mlflow_version: str = "") -> str | None:
    """requirements.txt as the image of `mlflow_version` installs it (the MLflow pin replaced, as the Dockerfile
    does with MLFLOW_VERSION), for a copy of the context built without build arguments (`export terraform`); None
    when the version is the pin's (or none is set)."""
    import re

    if not build_args(root, mlflow_version):
        return None
    text = (root / "requirements.txt").read_text(encoding="utf-8")
    return re.sub(r"(?m)^mlflow\[auth\]==.*$", f"mlflow[auth]=={mlflow_version}", text)


def build_args(root: Path, mlflow_version: str = "") -> list[str]:
    """`docker build` arguments the settings add: `--build-arg MLFLOW_VERSION=...` for a version other than the pin."""
    if not mlflow_version or mlflow_version == mlflow_pin(root):
        return []
    return ["--build-arg", f"MLFLOW_VERSION={mlflow_version}"]
