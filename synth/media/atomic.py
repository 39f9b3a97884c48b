"""Atomic publication of output files: nothing partial is ever left at the destination.

Every file th writes goes to a temporary sibling first and is renamed into place only when complete,
so an interrupted or failed write leaves the destination untouched (or absent).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from synth.errors import UserError


def check_writable(dest: Path, force: bool) -> None:
    """Refuse to clobber an existing file unless ``force``; make sure the parent folder exists."""
    dest = Path(dest)
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; pass --force to overwrite it")
    if dest.exists() and dest.is_dir():
        raise UserError(f"{dest} is a directory")
    dest.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(dest: Path | str, force: bool = False, suffix: str | None = None,
                mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``, on error delete it.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so tools that sniff the extension
    (ffmpeg, c2pa) treat it as the final format.
    """
    dest = Path(dest)
    check_writable(dest, force)
    sfx = suffix if suffix is not None else dest.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{sfx}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise UserError(f"internal error: nothing was written for {dest}", exit_code=1)
        if mode is None:  # mkstemp makes 0600; ordinary outputs get the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(dest: Path | str, data: bytes, force: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically (optionally with permission bits, e.g. 0o600)."""
    with atomic_path(dest, force=force, mode=mode) as tmp:
        tmp.write_bytes(data)
