"""The one way femurseg writes a file: staged beside the destination, verified, then renamed into place.

Every output (images, masks, CSV, JSON, PNG, DICOM, model bundles' files) goes through :class:`Transaction`:

- each file is first written under a private staging folder in the destination's own folder
  (``.femurseg-<pid>-<random>.tmp/``; short, so a legal 255-character file name still fits), so the final rename
  never crosses a file system and a reader never sees a half-written file;
- at :meth:`Transaction.commit` every staged file is flushed to disk (``fsync``), given the mode the user's umask
  asks for (``0666 & ~umask``: colleagues can read outputs, as with any other tool), and renamed into place; without
  ``overwrite`` the rename is exclusive (a hard link that fails if the name exists), so two runs racing to one
  output cannot both win;
- the outputs of one invocation succeed together or not at all: if placing one fails, those already placed are
  removed again and files they replaced are put back;
- the staging folder is removed on every exit path (errors, ``KeyboardInterrupt``, SIGTERM through
  :func:`femurseg.cli.main.main`'s handler); a run killed with SIGKILL leaves its staging folder, and the next
  write into that folder removes staging folders whose process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from femurseg.errors import InputError

__all__ = ["Transaction", "transaction", "write_bytes", "write_text", "remove_stale_staging", "STAGING_PATTERN"]

#: errno values of a write that failed for lack of room or permission (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, EIO).
_WRITE_ERRNOS = {28, 122, 27, 30, 13, 5}

#: Names of staging folders: ``.femurseg-<pid>-<hex>.tmp``.
STAGING_PATTERN = re.compile(r"^\.femurseg-(\d+)-[0-9a-f]{8}\.tmp$")


def _umask_mode() -> int:
    """``0o666 & ~umask`` (reading the umask means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(folder: Path) -> None:
    """Remove staging folders in ``folder`` left by femurseg processes that no longer run (SIGKILL, power loss)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        m = STAGING_PATTERN.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _fail(path: Path, err: OSError) -> InputError:
    return InputError(f"cannot write {path}: {err.strerror or err}")


class Transaction:
    """Outputs that are placed together at :meth:`commit`, or not at all (see the module's docstring).

    Parameters
    ----------
    overwrite : bool
        Replace existing files; without it an existing destination makes :meth:`commit` fail (and
        :meth:`stage` fail early when the file already exists).
    """

    def __init__(self, *, overwrite: bool) -> None:
        self.overwrite = bool(overwrite)
        self._staged: list[tuple[Path, Path]] = []  # (staged file, destination), in placing order
        self._folders: dict[Path, Path] = {}

    def _staging(self, folder: Path) -> Path:
        if folder not in self._folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                remove_stale_staging(folder)
                staging = folder / f".femurseg-{os.getpid()}-{secrets.token_hex(4)}.tmp"
                staging.mkdir(mode=0o700)
            except OSError as err:
                raise _fail(folder, err) from None
            self._folders[folder] = staging
        return self._folders[folder]

    def stage(self, path: str | os.PathLike[str], *, companions: tuple[str, ...] = ()) -> Path:
        """A path to write ``path``'s content to; it is placed at ``path`` by :meth:`commit`.

        ``companions`` are further file names the writer puts beside it (a ``.mhd`` header's ``.raw`` data):
        they are placed first, so a header never names a missing file.
        """
        path = Path(path)
        if path.is_dir():
            raise InputError(f"cannot write {path}: it is a folder")
        if not self.overwrite and path.exists():
            raise InputError(f"{path} exists; pass --overwrite to replace it")
        staging = self._staging(path.parent)
        staged = staging / path.name
        for item in [*((staging / name, path.parent / name) for name in companions), (staged, path)]:
            if item not in self._staged:  # staging a path twice (to fail early, then to write) is one output
                self._staged.append(item)
        return staged

    def commit(self) -> list[Path]:
        """Flush, set modes and place every staged file that exists; all or nothing.  Returns the destinations."""
        mode = _umask_mode()
        todo = [(s, d) for s, d in self._staged if s.exists()]
        for staged, dest in todo:
            try:
                fd = os.open(staged, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.chmod(staged, mode)
            except OSError as err:
                raise _fail(dest, err) from None
        placed: list[tuple[Path, Path | None]] = []  # (destination, backup of what it replaced)
        try:
            for staged, dest in todo:
                backup = None
                if self.overwrite:
                    if dest.exists() and not dest.is_dir():
                        backup = staged.with_name(staged.name + ".old")
                        os.link(dest, backup)
                    os.replace(staged, dest)
                else:
                    try:
                        os.link(staged, dest)
                    except FileExistsError:
                        raise InputError(f"{dest} exists (written by another run?); pass --overwrite to replace "
                                         "it") from None
                    except OSError as err:
                        if err.errno not in (1, 18, 38, 95):  # EPERM, EXDEV, ENOSYS, EOPNOTSUPP: no hard links
                            raise
                        if dest.exists():
                            raise InputError(f"{dest} exists; pass --overwrite to replace it") from None
                        os.replace(staged, dest)
                placed.append((dest, backup))
        except BaseException as err:
            for dest, backup in reversed(placed):
                if backup is not None:
                    os.replace(backup, dest)
                else:
                    dest.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise _fail(dest, err) from None
            raise
        return [d for _, d in todo]

    def destination_of(self, filename: object) -> Path | None:
        """The destination a staged file (or its staging folder) stands for; None for other paths."""
        if not isinstance(filename, (str, os.PathLike)):
            return None
        p = Path(filename)
        for staged, dest in self._staged:
            if p == staged:
                return dest
        for folder, staging in self._folders.items():
            if p == staging or staging in p.parents:
                return folder
        return None

    def abort(self) -> None:
        """Remove every staging folder (always called by :func:`transaction`)."""
        for staging in self._folders.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._folders.clear()


@contextmanager
def transaction(*, overwrite: bool) -> Iterator[Transaction]:
    """A :class:`Transaction` committed when the block ends normally; staging is removed on every exit path."""
    tx = Transaction(overwrite=overwrite)
    try:
        yield tx
        tx.commit()
    except OSError as err:
        dest = tx.destination_of(err.filename)
        if dest is None and err.filename is None and err.errno in _WRITE_ERRNOS and tx._staged:
            # A write (not an open) failed: the error names no file; name the outputs being written.
            dest = Path(", ".join(str(d) for _, d in tx._staged))
        if dest is None:  # not one of ours (reading an input, say): not a write failure
            raise
        raise _fail(dest, err) from None
    finally:
        tx.abort()


def _write_with(path: str | os.PathLike[str], writer: Callable[[Path], None], overwrite: bool) -> Path:
    path = Path(path)
    with transaction(overwrite=overwrite) as tx:
        staged = tx.stage(path)
        try:
            writer(staged)
        except OSError as err:
            raise _fail(path, err) from None
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (one-file :func:`transaction`)."""
    return _write_with(path, lambda p: p.write_bytes(data), overwrite)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (one-file :func:`transaction`)."""
    return _write_with(path, lambda p: p.write_text(text, encoding="utf-8"), overwrite)
