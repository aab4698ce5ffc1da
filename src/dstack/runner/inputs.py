"""The `downloading` step after the code: dependency artifacts, saved workflow caches, and
a re-queued job's own artifacts as its interrupted attempt left them.

Every file is a verified copy of its blob (never a hard link), so a job writing to a placed
file cannot corrupt the store. Every path is checked again before anything is written (a
manifest may come from anyone who can tag a run): the artifact path must map inside the job's
directory with no symbolic link on the way (the job's code may hold some), and each entry is
written only into folders made or checked one name at a time (`storage.transfer.place`).
"""

from __future__ import annotations

from dstack.errors import DstackError
from dstack.models.artifacts import DepArtifacts, Manifest
from dstack.models.protocol import JobAssignment
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import Notice
from dstack.runner.faults import pause_point
from dstack.runner.paths import JobPaths
from dstack.runner.sizes import format_size
from dstack.storage.base import BlobStore
from dstack.storage.transfer import place


def place_inputs(
    assignment: JobAssignment, paths: JobPaths, store: BlobStore, notice: Notice
) -> None:
    """Place every dependency's artifacts, restore the workflow caches, then put back the
    job's own artifacts of its earlier attempt (a re-queued job: `JobAssignment.resume`).

    A missing or corrupt blob raises `JobStartError` naming the dependency, its artifact path
    and (through the storage error) the blob; what was placed before stays in the job dir.
    """
    for dep in assignment.deps:
        for manifest in dep.manifests:
            _place(manifest, paths, store, what=f"artifact '{manifest.path}' of {_label(dep)}")
            notice(f"placed {_files(manifest)} of {_label(dep)} at {manifest.path}")
            pause_point("deps", paths.job_dir.name)
    for cache in assignment.caches:
        _place(cache, paths, store, what=f"cache '{cache.path}'")
        notice(f"restored cache {cache.path}: {_files(cache)}")
    for manifest in assignment.resume:
        _place(manifest, paths, store, what=f"artifact '{manifest.path}' of the last attempt")
        notice(f"resumed {manifest.path} from the last attempt: {_files(manifest)}")


def _place(manifest: Manifest, paths: JobPaths, store: BlobStore, *, what: str) -> None:
    try:
        place(manifest, paths.check_root(manifest.path), store, within=paths.job_dir)
    except DstackError as exc:
        raise JobStartError(f"cannot place {what}: {exc.message}", exc.hint) from exc
    except OSError as exc:
        raise JobStartError(f"cannot place {what}: {exc}") from exc


def _label(dep: DepArtifacts) -> str:
    name = f"'{dep.workflow_name}' " if dep.workflow_name else ""
    return f"dependency {name}(run {dep.run_name})"


def _files(manifest: Manifest) -> str:
    count = len(manifest.files)
    return f"{count} file{'' if count == 1 else 's'} ({format_size(manifest.size)})"
