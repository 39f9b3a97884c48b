"""Atomic publication of output files: nothing partial is ever left at the destination, even under SIGKILL.

Every file th writes is made under a temporary name in th's work folder (``synth.media.workdir``: a
session folder of the writing process, on the destination's filesystem, never beside the user's files)
and appears at the destination only complete, by one rename or link. A killed writer's temporary files
are removed by the next th process that writes there. Without ``force`` an existing destination is never
replaced — not even one another process created meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from synth.errors import UserError
from synth.media.workdir import io_reason, publish_named, temp_path, write_error


def check_writable(dest: Path, force: bool) -> None:
    """Fail fast, before any work: ``dest`` is not a folder, exists only with ``force``, and its folder
    (created if missing) is writable."""
    dest = Path(dest)
    if dest.is_dir():
        raise UserError(f"{dest} is a directory; give a file name")
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; pass --force to overwrite it")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder {parent}: {io_reason(e) or e}") from e
    if not parent.is_dir():
        raise UserError(f"{parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        ro = "read-only file system" if _read_only_fs(parent) else "permission denied"
        raise UserError(f"cannot write into {parent}: {ro}")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(dest: Path | str, force: bool = False, suffix: str | None = None,
                mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path for ``dest`` (in th's work folder); on success publish it onto ``dest``,
    on error delete it. Write failures (disk full, size limit, read-only, vanished folder) become one
    ``UserError`` line.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so tools that sniff the extension
    (ffmpeg, c2pa) treat it as the final format. Permissions: ``mode``, else the umask's.
    """
    dest = Path(dest)
    check_writable(dest, force)
    tmp = temp_path(dest, suffix)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise UserError(f"internal error: nothing was written for {dest}", exit_code=1)
        publish_named(tmp, dest, force, mode)
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _write_failure(e, tmp):
            raise write_error(dest, e) from e
        raise


def _write_failure(e: BaseException, tmp: Path) -> bool:
    """A failure of writing itself (disk full, size limit, read-only, the temp file gone), not e.g. a
    missing input file read inside the ``with`` block."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
        return e.filename is not None and Path(e.filename) == tmp
    return io_reason(e) is not None


def atomic_write_bytes(dest: Path | str, data: bytes, force: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically (optionally with permission bits, e.g. 0o600)."""
    with atomic_path(dest, force=force, mode=mode) as tmp:
        tmp.write_bytes(data)
