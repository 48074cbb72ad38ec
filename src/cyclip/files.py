"""Files in and out: one atomic writer, and JSON / YAML / CSV readers that all fail the same way.

Writing: a crash or a full disk mid-write must never leave a half-written file where a complete one was,
so every file goes to a temporary file beside its target, is flushed to disk, gets the permissions any
other file the user creates would get (the umask's, not the 0600 of a temporary file) and is renamed
over the target; the rename is flushed too. On any exception the temporary file is removed, and a write the
file system refuses (full disk, no permission, read-only) becomes one `OutputWriteError` line naming the file,
even where the writer wraps it (torch reports a full disk as a RuntimeError raised while handling the OSError).
Commands check their output locations with `require_writable_folder` / `require_writable_file` before any
model is built, so that such a problem is found at start-up, not after the first epoch.

Reading: whatever is wrong with a file the user gave is one `DataError` that starts with the file's path
and says where (line, column or byte) and how to fix it, so the command line can print it as one line.
Files are read as UTF-8, a byte-order mark (as spreadsheet programs write) dropped; JSON and YAML are
parsed as plain data, never executed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from cyclip.errors import DataError, OutputWriteError

__all__ = [
    "CsvReader",
    "atomic_path",
    "fsync_path",
    "locate_bad_utf8",
    "read_json",
    "read_text",
    "read_yaml_mapping",
    "require_writable_file",
    "require_writable_folder",
    "write_atomically",
    "write_text_atomically",
]

_REENCODE = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


def _current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import, while no other thread can be between the two os.umask calls.
FILE_MODE = 0o666 & ~_current_umask()


# --- writing ---------------------------------------------------------------------------------------------


# What the file system answers when it cannot take a write; other OSErrors (e.g. a writer failing to read
# its own input) pass through unchanged.
WRITE_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EFBIG)
    if code is not None
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name; when the block ends without an
    exception the file is flushed to disk and renamed over `path`, otherwise it is removed. A write the file
    system refuses is an OutputWriteError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # the folder itself: missing permission, read-only, a file in the way
        raise OutputWriteError(write_failure(path, error), refused=error) from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync_file(temporary)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        cause = refused_write(error)
        if cause is None or isinstance(error, OutputWriteError):
            raise
        raise OutputWriteError(write_failure(path, cause), refused=cause) from None
    fsync_path(path.parent)


def refused_write(error: BaseException) -> OSError | None:
    """The OSError of a refused write that `error` is, or was raised while handling; None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def write_failure(path: Path, error: OSError, kept: str | None = None) -> str:
    """'no space left on device while writing X; <what is kept> and no partial file is left (fix)': one line.

    kept: what is still intact (default: the file `path` itself if it exists).
    """
    reason = (error.strerror or os.strerror(error.errno or 0) or str(error)).lower()
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space"
    elif isinstance(error, (FileExistsError, NotADirectoryError)):
        fix = f"{_file_in_the_way(path.parent)} is a file, not a folder"
    else:
        fix = "check that the folder is writable"
    if kept is None:
        kept = f"the previous {path} is intact" if path.is_file() else "nothing was written"
    return f"{reason} while writing {path}; {kept} and no partial file is left ({fix}, or write elsewhere)"


def _file_in_the_way(folder: Path) -> Path:
    """`folder` or the nearest of its parents that exists: the file that makes creating `folder` fail."""
    return next((candidate for candidate in (folder, *folder.parents) if candidate.exists()), folder)


def require_writable_folder(folder: str | os.PathLike, flag: str = "--output", given: str | None = None) -> Path:
    """Create `folder` and write and remove a probe file in it, so that an output location that cannot be
    written is one OutputWriteError line at start-up, naming `flag` and the value `given` (default: the
    folder), not a traceback after the model is built."""
    folder = Path(folder)
    shown = f"{flag} {given or folder}"
    blocker = _file_in_the_way(folder)
    if blocker.exists() and not blocker.is_dir():
        raise OutputWriteError(f"{shown}: {blocker} is a file, not a folder; choose another {flag} or move the file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".cyclip-write-test.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise OutputWriteError(
            f"{shown}: cannot write in {folder} ({reason}); choose another {flag} or make the folder writable"
        ) from None
    return folder


def require_writable_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Check that the file `path` can be written (its folder is created and probed); see require_writable_folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputWriteError(f"{flag} {path}: is a folder; pass a file name, e.g. {path / 'results.json'}")
    require_writable_folder(path.parent, flag, given=str(path))
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Write `path` with `write(file)` (a binary file object): it then holds the old or the complete new bytes."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        write(file)
    return Path(path)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` as UTF-8 to `path` atomically (see `write_atomically`)."""
    return write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries (making a rename durable), to disk (POSIX); a no-op where folders
    cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# --- reading ---------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} {'is a folder, not a file' if path.is_dir() else 'not found'}")


def _with_fix(message: str, fix: str | None) -> str:
    return f"{message}; {fix}" if fix else message


def locate_bad_utf8(path: str | os.PathLike) -> str:
    """'line N (byte 0x..)' of the first byte that is not UTF-8; a multi-byte character never spans a newline."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {number} (byte 0x{raw[error.start]:02x})"
    return "the file"


def _not_utf8(path: Path) -> DataError:
    return DataError(f"{path}: {locate_bad_utf8(path)} is not valid UTF-8; {_REENCODE}")


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of a UTF-8 file; a missing file or a byte that is not UTF-8 is one DataError."""
    path = Path(path)
    _require_file(path, what)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def read_json(path: str | os.PathLike, what: str = "file", fix: str | None = None) -> Any:
    """A JSON file's content (parsed, never executed); a missing file, bad bytes or bad syntax is one
    DataError naming the place, followed by `fix` when given."""
    path = Path(path)
    _require_file(path, what)
    with path.open("rb") as file:
        if b"\0" in file.read(8192):  # binary (a checkpoint, an archive): not a text file in another encoding
            raise DataError(_with_fix(f"{path}: not a JSON {what} (it holds binary data)", fix))
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        place = f"{path}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        raise DataError(_with_fix(place, fix)) from None


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (parsed safely: plain data only); one DataError otherwise."""
    path = Path(path)
    text = read_text(path, what)
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error.__class__.__name__
        raise DataError(f"{path}: not valid YAML{where}: {problem}".replace("\n", " ")) from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


class CsvReader:
    """A CSV/TSV file as a header and numbered rows; every problem is one DataError naming the line.

        with CsvReader(path, separator) as table:
            for line, row in table.rows():   # line: the file line the row starts on (captions may span lines)

    The header is the first non-empty row, its names stripped ([] for an empty file). Rows are the
    non-empty data rows; each must have as many fields as the header.
    """

    def __init__(self, path: str | os.PathLike, separator: str = ",", what: str = "file") -> None:
        self.path = Path(path)
        self.separator = separator
        self.what = what
        self.header: list[str] = []
        self._file: IO[str] | None = None
        self._reader: Any = None

    def __enter__(self) -> CsvReader:
        _require_file(self.path, self.what)
        self._file = open(self.path, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._file, delimiter=self.separator)
        try:
            first: list[str] = next((row for row in self._reader if row), [])
        except UnicodeDecodeError:
            self.close()
            raise _not_utf8(self.path) from None
        except csv.Error as error:
            self.close()
            raise DataError(f"{self.path}: line 1: {error}; check the quoting of the header") from None
        self.header = [name.strip() for name in first]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line, row) of every non-empty data row, in file order."""
        reader, width = self._reader, len(self.header)
        end = reader.line_num  # last line of the last complete row
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise DataError(
                        f"{self.path}: line {start} has {len(row)} fields but the header has {width}; "
                        f"quote fields that contain {self.separator!r} or fill in the missing ones"
                    )
                yield start, row
        except UnicodeDecodeError:
            raise _not_utf8(self.path) from None
        except csv.Error as error:
            raise DataError(
                f"{self.path}: line {end + 1}: {error}; check the quoting of the row starting there"
            ) from None
