"""th's work folders: where every unfinished file lives, so a killed th leaves nothing beside the user's files.

Intermediates (a checkpoint being written, a shard, an encode before signing) never sit next to the
destination. They live in a th-owned *work folder* on the destination's filesystem, so that publishing
is a rename or a link: ``$TH_HOME/work`` when it is on that filesystem, else ``<destination
folder>/.th-work`` (mode 0700 either way).

Each th process writes into its own *session* there: ``<pid>-<random>/`` beside ``<pid>-<random>.lock``,
a file holding the writer's PID that the writer keeps ``flock``-ed while it lives (forked workers share
the lock). The kernel drops the lock when the process dies, however it dies, so any later th process
that opens a session in the same work folder can tell a dead writer's leftovers from a live one's: it
removes them and says so in one line. A clean exit removes the process's own sessions.

Unsigned generated media never gets a name at all where the OS allows it: ``anonymous_file`` is an
``O_TMPFILE`` inode the kernel frees when its last descriptor closes — when its writer exits or is
killed — and it becomes a file only when ``publish`` links it into place, complete and signed.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from synth.errors import UserError

WORK_NAME = "work"  # under $TH_HOME
BESIDE_NAME = ".th-work"  # beside the destination when $TH_HOME is on another filesystem


def th_home() -> Path:
    """th's config folder: $TH_HOME, else $XDG_CONFIG_HOME/th, else ~/.config/th."""
    if os.environ.get("TH_HOME"):
        return Path(os.environ["TH_HOME"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "th"


def io_reason(e: BaseException) -> str | None:
    """A short reason for an I/O failure th should report as one line (disk full, size limit, read-only,
    vanished folder, permissions), or None for anything else."""
    reasons = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EFBIG: "file size limit reached (ulimit -f)", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.ENOENT: "its folder does not exist (any more)", errno.EIO: "input/output error"}
    if isinstance(e, OSError) and e.errno in reasons:
        return reasons[e.errno]
    text = str(e)  # libraries that wrap OS errors (safetensors, ffmpeg) keep the strerror text
    for needle, reason in (("No space left", reasons[errno.ENOSPC]), ("File too large", reasons[errno.EFBIG]),
                           ("Read-only file system", reasons[errno.EROFS]), ("Disk quota", reasons[errno.EDQUOT])):
        if needle in text:
            return reason
    return None


def write_error(dest: Path, e: BaseException) -> UserError:
    """The one line th prints when writing ``dest`` failed for an environmental reason (exit 1)."""
    reason = io_reason(e) or f"{type(e).__name__}: {e}"
    return UserError(f"cannot write {dest}: {reason}; nothing was written", exit_code=1)


def _same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def work_dir(folder: Path) -> Path:
    """The work folder for outputs in ``folder`` (created, 0700): $TH_HOME/work if on the same
    filesystem, else ``folder/.th-work``."""
    folder = Path(folder)
    home = th_home() / WORK_NAME
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _same_filesystem(home, folder):
            return home
    except OSError:
        pass  # no usable $TH_HOME: work beside the destination
    beside = folder / BESIDE_NAME
    try:
        beside.mkdir(exist_ok=True, mode=0o700)
    except OSError as e:
        reason = "no such folder" if isinstance(e, FileNotFoundError) else io_reason(e) or str(e)
        raise UserError(f"cannot write into {folder}: {reason}; nothing was written", exit_code=1) from e
    return beside


class Session:
    """One process's corner of a work folder: a locked ``<pid>-<token>.lock`` and a ``<pid>-<token>/`` folder."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.owner = os.getpid()
        token = f"{self.owner}-{secrets.token_hex(4)}"
        # The lock is taken before its name appears, so a sweeper never sees an unlocked live lock.
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=work)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{self.owner}\n".encode())
        self.lock_path = work / f"{token}.lock"
        os.rename(tmp, self.lock_path)
        self.lock_fd = fd
        self.dir = work / token
        self.dir.mkdir(mode=0o700)

    def close(self) -> None:
        """Remove this session (the process is done with it)."""
        if os.getpid() != self.owner:  # a forked child exiting must not remove its parent's session
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.lock_path.unlink()
            os.close(self.lock_fd)
        with contextlib.suppress(OSError):
            self.work.rmdir()  # only if empty: another live session keeps it


_sessions: dict[Path, Session] = {}


def session_for(folder: Path) -> Session:
    """This process's session in the work folder for ``folder`` (opened on first use, after a sweep)."""
    work = work_dir(folder)
    s = _sessions.get(work)
    if s is not None and s.dir.is_dir():  # forked workers share their parent's session (and its lock)
        return s
    for attempt in range(3):
        sweep(work)
        try:
            work.mkdir(exist_ok=True, mode=0o700)  # another process's close() may have removed it
            s = Session(work)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    _sessions[work] = s
    return s


def _dead(lock: Path) -> bool:
    """True when nobody holds ``lock`` (its writer is gone); False while it is held or already removed."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: the writer (or a forked worker of it) is alive
    finally:
        os.close(fd)
    return True


def sweep(work: Path) -> list[str]:
    """Remove the sessions of dead writers in ``work``; report what went in one line on stderr."""
    if not work.is_dir():
        return []
    gone: list[str] = []
    files = 0
    size = 0
    mine = {s.lock_path for s in _sessions.values() if s.owner == os.getpid()}
    for entry in sorted(work.iterdir()):
        stale_lock = entry.suffix == ".lock" and entry not in mine and _dead(entry)
        half_made = entry.name.startswith(".new-") and _dead(entry)  # killed while opening a session
        if not (stale_lock or half_made):
            continue
        try:
            pid = entry.read_text().strip() or "?"
        except OSError:
            pid = "?"
        folder = work / entry.stem
        if stale_lock and folder.is_dir():
            for f in folder.rglob("*"):
                if f.is_file():
                    files += 1
                    size += f.stat().st_size
            shutil.rmtree(folder, ignore_errors=True)
        entry.unlink(missing_ok=True)
        gone.append(pid)
    # A session folder whose lock is gone belongs to nobody (its owner removed the lock last, or died mid-clean).
    for entry in work.iterdir():
        if entry.is_dir() and not (work / f"{entry.name}.lock").exists():
            shutil.rmtree(entry, ignore_errors=True)
    if files:
        pids = ", ".join(sorted(set(gone)))
        print(f"th: removed {files} unfinished file(s) ({size / 1e6:.1f} MB) left in {work} by th process(es) "
              f"no longer running (pid {pids})", file=sys.stderr, flush=True)
    return gone


@atexit.register
def _close_sessions() -> None:
    for s in list(_sessions.values()):
        s.close()
    _sessions.clear()


def temp_path(dest: Path, suffix: str | None = None) -> Path:
    """A fresh name in this process's session for the work folder of ``dest`` (same suffix as ``dest``)."""
    dest = Path(dest)
    sfx = dest.suffix if suffix is None else suffix
    fd, name = tempfile.mkstemp(prefix=f"{dest.stem[:40]}.", suffix=f".part{sfx}", dir=session_for(dest.parent).dir)
    os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def publish_named(tmp: Path, dest: Path, force: bool, mode: int | None = None) -> None:
    """Move a finished temp file onto ``dest``: replace it with ``force``, else only if ``dest`` is
    still absent (another process may have created it meanwhile)."""
    os.chmod(tmp, _umask_mode() if mode is None else mode)
    _fsync(tmp)  # the data is on disk before the name is: no empty file after a power cut
    if force:
        _replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise UserError(f"{dest} was created by another process meanwhile; nothing was written "
                        "(pass --force to overwrite it)") from None
    except OSError as e:
        raise write_error(dest, e) from e
    tmp.unlink(missing_ok=True)


def _replace(tmp: Path, dest: Path) -> None:
    if dest.is_dir():
        raise UserError(f"{dest} is a directory; give a file name")
    try:
        os.replace(tmp, dest)
    except OSError as e:
        raise write_error(dest, e) from e


class AnonymousFile:
    """A file with no name (O_TMPFILE) on the destination's filesystem, until ``publish`` names it.

    ``path`` (``/proc/self/fd/N``) opens it in this process, and in a child that inherits ``fd``
    (``subprocess``'s ``pass_fds``), e.g. ffmpeg. Where O_TMPFILE is unavailable it falls back to a
    named file in the session folder (removed by the next th that writes there if this one dies).
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        session = session_for(self.dest.parent)
        self.named: Path | None = None
        try:
            self.fd = os.open(session.dir, os.O_TMPFILE | os.O_RDWR, 0o600)
            self.path = Path(f"/proc/self/fd/{self.fd}")
        except (AttributeError, OSError):  # no O_TMPFILE (not Linux, or the filesystem lacks it)
            self.named = temp_path(self.dest)
            self.fd = os.open(self.named, os.O_RDWR)
            self.path = self.named

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def publish(self, force: bool = False, mode: int | None = None) -> None:
        """Give the finished file its name ``dest`` (see ``publish_named`` for ``force``)."""
        if self.size() == 0:
            raise UserError(f"internal error: nothing was written for {self.dest}", exit_code=1)
        if self.named is not None:
            publish_named(self.named, self.dest, force, mode)
            return
        os.fchmod(self.fd, _umask_mode() if mode is None else mode)
        os.fsync(self.fd)
        # linkat(AT_SYMLINK_FOLLOW) names the inode; src_dir_fd only selects linkat over link(2)
        root = os.open("/", os.O_RDONLY)
        try:
            target = self.dest if not force else temp_path(self.dest)
            if force:
                target.unlink()
            os.link(self.path, target, src_dir_fd=root, follow_symlinks=True)
        except FileExistsError:
            raise UserError(f"{self.dest} was created by another process meanwhile; nothing was written "
                            "(pass --force to overwrite it)") from None
        except OSError as e:
            raise write_error(self.dest, e) from e
        finally:
            os.close(root)
        if force:
            _replace(target, self.dest)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.named is not None:
            self.named.unlink(missing_ok=True)


@contextlib.contextmanager
def anonymous_file(dest: Path | str) -> Iterator[AnonymousFile]:
    """An ``AnonymousFile`` for ``dest``, always closed (so freed unless published) afterwards."""
    f = AnonymousFile(Path(dest))
    try:
        yield f
    finally:
        f.close()


def fd_of(path: Path | str) -> int | None:
    """The descriptor behind an ``AnonymousFile.path`` (a child process must inherit it), else None."""
    s = str(path)
    prefix = "/proc/self/fd/"
    return int(s[len(prefix):]) if s.startswith(prefix) and s[len(prefix):].isdigit() else None
