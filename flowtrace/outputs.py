"""Files flowtrace writes for people (figures, report pages and sites, tables, pathway recipes):
whole or not at all, and never over a file it did not make.

`write_file` writes to a temporary name in the target's folder and renames it into place: a
reader, or a kill at any moment, finds the old file or the new one, never part of either.

A name flowtrace derives (a store's figure beside it, a pathway folder's table, the default
report page) may meet the user's own file. `claims(folder)` keeps a record of the files
flowtrace wrote in a folder (`.flowtrace-outputs.json`: name -> what it was written for and its
SHA-256). A file is flowtrace's to replace only where that record names it, for the same
purpose, with the hash it still has (changed since, it is the user's). The record is read, names
are chosen and files written under a lock on the folder, so two runs finishing together neither
take one name nor lose each other's entries.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flowtrace.errors import OptionError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock, the record is still whole
    fcntl = None

RECORD = ".flowtrace-outputs.json"
PARTIAL = ".partial"  # suffix of a temporary file being written (removed if the write fails)
# What `flowtrace pathways` writes its tables, figures and recipes in --out for.
PATHWAYS = "flowtrace pathways"


class OutputWarning(UserWarning):
    """An output went to another name than the usual one, or was not drawn; the message says
    where and why (the CLI prints it as one `warning:` line)."""


def write_file(path: Path | str, data: bytes | str, param: str = "out") -> Path:
    """Write `data` to `path` whole: a temporary file in the same folder, flushed to disk, then
    renamed over `path`. A folder or an unwritable place is an OptionError naming `param`."""
    path = Path(path)
    if path.is_dir():
        raise is_a_folder(path, param)
    try:
        _replace(path, data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as err:
        raise unwritable(path, err, param) from None
    return path


def _replace(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_a_folder(path: Path, param: str) -> OptionError:
    return OptionError(param, f"{path}: is a folder; give the name of a file to write")


def unwritable(path: Path, err: OSError, param: str) -> OptionError:
    reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return OptionError(
        param, f"{path}: cannot be written ({reason}); choose another {param} you can write to"
    )


class Claims:
    """The files flowtrace wrote in one folder (see the module); use through `claims`."""

    def __init__(self, folder: Path, param: str) -> None:
        self.folder, self.param = folder, param
        self.files: dict[str, dict] = _read_record(folder / RECORD)
        self._pending: dict[str, str] = {}

    def _key(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()

    def mine(self, path: Path, owner: str) -> bool:
        """Whether flowtrace may write `path` for `owner`: nothing is there, or the record says
        flowtrace wrote it for `owner` and it is unchanged since."""
        path = Path(path)
        if not os.path.lexists(path):
            return True
        if path.is_symlink() or not path.is_file():
            return False
        entry = self.files.get(self._key(path)) or {}
        return entry.get("for") == owner and _sha256(path) in entry.get("sha256", [])

    def check(self, path: Path, owner: str) -> None:
        """Refuse (OptionError naming the parameter) to replace what `mine` does not allow."""
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            raise is_a_folder(path, self.param)
        if not self.mine(path, owner):
            raise OptionError(
                self.param,
                f"{path}: exists, and flowtrace did not write it for {owner} (or it was changed "
                f"since); it is left as it was: choose another {self.param}, or move it away",
            )

    def write(self, path: Path, data: bytes | str, owner: str) -> Path:
        """Write `path` whole for `owner` and record it. The record names the new hash before
        the rename (beside the old one until the write is done), so a kill between the two
        leaves a file the record still knows."""
        path = Path(path)
        self.check(path, owner)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        digest = hashlib.sha256(payload).hexdigest()
        key = self._key(path)
        before = self.files.get(key, {}).get("sha256", []) if os.path.lexists(path) else []
        self.files[key] = {"for": owner, "sha256": [*before, digest]}
        try:
            self._save()
            # A write killed before its rename left its temporary file; every writer of this
            # name holds the folder's lock, so none is in progress now.
            for stale in path.parent.glob(f".{glob.escape(path.name)}.*{PARTIAL}"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            _replace(path, payload)
        except OSError as err:  # the output is named, not the record beside it
            raise unwritable(path, err, self.param) from None
        self.files[key] = {"for": owner, "sha256": [digest]}
        self._pending[key] = digest
        return path

    def _save(self) -> None:
        record = {"format": 1, "files": dict(sorted(self.files.items()))}
        _replace(self.folder / RECORD, (json.dumps(record, indent=1) + "\n").encode())

    def close(self) -> None:
        if self._pending:
            try:
                self._save()
            except OSError as err:
                raise unwritable(self.folder / RECORD, err, self.param) from None
            self._pending.clear()


@contextlib.contextmanager
def claims(folder: Path | str, param: str = "out") -> Iterator[Claims]:
    """The record of `folder` (made if missing), locked against other flowtrace processes while
    the block chooses names and writes files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OptionError(param, f"{folder}: is a file, not a folder; choose another {param}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(folder, err, param) from None
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a filesystem without locks: go on unlocked
                fcntl.flock(fd, fcntl.LOCK_EX)
        held = Claims(folder, param)
        yield held
        held.close()
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _read_record(path: Path) -> dict[str, dict]:
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mode(path: Path) -> int:
    """The mode a file replaced keeps; a new one gets what `open` would give it (0666 less the
    umask), not mkstemp's private 0600."""
    with contextlib.suppress(OSError):
        return os.stat(path).st_mode & 0o7777
    return 0o666 & ~_umask()


def _umask() -> int:
    # Read, not set and reset: os.umask is process-wide, and other threads create files.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
