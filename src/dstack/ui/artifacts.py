"""A run's artifacts as one folder tree: browse, download a file, a folder as a zip
(streamed: written while it is sent, never whole in memory), preview text and images."""

from __future__ import annotations

import mimetypes
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from dstack.models.artifacts import JobArtifacts
from dstack.storage.base import BlobStore

PREVIEW_BYTES = 256 << 10
_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


@dataclass(frozen=True)
class File:
    path: str  # in the tree, `/`-separated
    size: int
    digest: str
    mode: int


def tree(found: list[JobArtifacts]) -> dict[str, File]:
    """Every file of every job, by its path in the tree: `ARTIFACT/FILE`, under the job's
    `workflow-INDEX/` when the run has several jobs with artifacts."""
    files: dict[str, File] = {}
    several = len(found) > 1
    for i, job in enumerate(found):
        prefix = f"{job.workflow_name or 'job'}-{i}/" if several else ""
        for manifest in job.manifests:
            root = manifest.path.strip("/").removeprefix("~/").strip("/") or "artifact"
            for entry in manifest.files:
                path = f"{prefix}{root}/{entry.path}" if entry.path else f"{prefix}{root}"
                files[path] = File(path, entry.size, entry.digest, entry.mode)
    return files


def listing(files: dict[str, File], folder: str) -> tuple[list[tuple[str, int, int]], list[File]]:
    """The subfolders (name, size of everything under it, file count) and files directly
    in `folder` ("" for the root)."""
    prefix = f"{folder}/" if folder else ""
    folders: dict[str, list[int]] = {}
    direct: list[File] = []
    for path, entry in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        name, slash, _ = rest.partition("/")
        if slash:
            totals = folders.setdefault(name, [0, 0])
            totals[0] += entry.size
            totals[1] += 1
        else:
            direct.append(entry)
    return [(n, t[0], t[1]) for n, t in sorted(folders.items())], direct


def under(files: dict[str, File], folder: str) -> list[File]:
    prefix = f"{folder}/" if folder else ""
    return [f for p, f in sorted(files.items()) if p.startswith(prefix) or p == folder]


def media_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def is_image(path: str) -> bool:
    return media_type(path) in _IMAGES


class _Sink:
    """A write-only file object whose bytes the zip generator hands out as they come."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks = []
        return data


def zip_stream(store: BlobStore, files: list[File], folder: str) -> Iterator[bytes]:
    """A zip of `files` (paths relative to `folder`), produced as it is read: each blob is
    copied chunk by chunk; blocking, so it is iterated in a thread."""
    sink = _Sink()
    cut = len(folder) + 1 if folder else 0
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
        for entry in files:
            name = entry.path[cut:] or entry.path.rsplit("/", 1)[-1]
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | entry.mode) << 16
            with archive.open(info, "w", force_zip64=True) as target:
                for chunk in store.open(entry.digest):
                    target.write(chunk)
                    if sink.offset and sink.chunks:
                        yield sink.take()
            yield sink.take()
    yield sink.take()
