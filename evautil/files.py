"""Files a command writes and reads: atomic writes (a reader, or a crash, never sees a half-written file under the
final name), the check that an output path can be written, the lock a process holds on an output, and one line
naming the file for a failed write or read."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import glob
import os
import re
import stat
import sys
import tempfile
from typing import IO, BinaryIO, Callable, Iterator

from .errors import OutputFolderError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_by_name", "write_output_text", "sync_folder",
           "new_file_mode",
           "atomic_temp_glob", "write_failure", "not_a_file", "error_writing", "output_path_problem",
           "make_output_folder", "hold_lock", "lock_is_free", "naming_the_file", "cannot_read", "atomic_temp_files",
           "atomic_temp_target", "file_head", "file_version", "same_path", "plain_spelling"]

# OSErrors that mean "this file cannot be written here": the fix is space, a quota, permissions or a file size limit,
# not the code.
_WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# How a run goes on once the cause is fixed (another OUTPUT, or TRAIN.AUTO_RESUME False, starts over: the same
# command resumes only so).
_RERUN = "run the same command: with TRAIN.AUTO_RESUME True (the default) it resumes from the last checkpoint in OUTPUT"


def write_failure(error: BaseException, rerun: str = _RERUN) -> str | None:
    """One line naming the file for an error that is, or was raised from, a failed write (disk full, quota,
    read-only file system) or a refused access (permissions); None for any other error. ``rerun``: how the command
    goes on once space is freed (default: a training run's resume)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in _WRITE_FAILURES:
            where = f" {error.filename}" if error.filename else ""
            hint = f"; free space and {rerun}" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            if error.errno == errno.EFBIG:  # Python ignores SIGXFSZ: a file size limit is this error, not a kill
                hint = ("; the file reached the largest this process may write (the shell's file size limit, "
                        f"ulimit -f, or the file system's largest file): lift the limit and {rerun}")
            verb = "access" if error.errno in (errno.EACCES, errno.EPERM) else "write"  # a read may be refused too
            return f"cannot {verb}{where}: {error.strerror or os.strerror(error.errno)}{hint}"
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def not_a_file(path: str) -> str:
    """Why ``path``, which is not a regular file, cannot be read as one: "is a folder, not a file" or "does not
    exist" (a folder given for a file was reported as missing, which sends its user looking for the wrong thing)."""
    return "is a folder, not a file" if os.path.isdir(path) else "does not exist"


def file_version(path: str) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of the file ``path`` names, None when it cannot be stat'ed: a file of the same
    version need not be read again, and an atomic write (a new inode renamed into place) changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def same_path(a: str, b: str) -> bool:
    """Whether two names are one file or folder (a symlink or a bind mount may give it two names)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def plain_spelling(path: str, folder: str = "") -> str:
    """``path`` (relative to ``folder``, unless absolute) spelled without what cannot change the file it names:
    ``.`` and empty parts (``a/./b``, ``a//b``), and ``x/..`` where ``x`` is a real folder (not a symbolic link).
    A ``..`` after a symbolic link leads to the parent of the link's target, not back to where the link is, and
    one after a name that is no folder (missing, or a file) fails to open: those keep their ``..``, so that two
    spellings are equal only where they are surely one file. Only a path with a ``..`` is looked up (``lstat``)."""
    if "//" not in path and "/." not in path and not path.startswith("."):
        return path  # the usual list row: nothing to take out (and no file system call)
    lead = "/" if path.startswith("/") else ""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != ".." and _real_folder(os.path.join(folder, lead + "/".join(parts))):
            parts.pop()
        else:
            parts.append(part)
    # a trailing '/' or '/.' asks for a folder (a file so named fails to open): kept, not made the file's name
    tail = "/" if parts and path.endswith(("/", "/.")) else ""
    return lead + "/".join(parts) + tail or "."


def _real_folder(path: str) -> bool:
    """Whether ``path`` is a folder itself, not a symbolic link to one (nor missing)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def file_head(path: str, length: int) -> tuple[bytes, int]:
    """The first ``length`` bytes of ``path`` (fewer when it is shorter) and its size, both from one open file (a
    size looked up by name apart from the read may be another file's, one written in its place). Raises OSError."""
    with open(path, "rb") as f:
        return f.read(length), os.fstat(f.fileno()).st_size


@contextlib.contextmanager
def naming_the_file(path: str, written: bool = False) -> Iterator[None]:
    """Raise an OSError from the block that names no file (a ``read()`` or ``write()`` on an open file that the
    storage fails, EIO) again naming ``path``: only ``open()`` names its file, and "Input/output error" alone does not
    say which of a command's files it was. With ``written`` (a block that writes ``path`` atomically), one naming the
    temporary file beside it or the file a link names (:func:`error_writing`) names ``path`` too: the file the user
    asked for, not a hidden name that no longer exists."""
    try:
        yield
    except OSError as error:
        renamed = written and error.filename != path and error_writing(error, path)
        if (error.filename and not renamed) or not error.errno:
            raise
        raise type(error)(error.errno, error.strerror, path) from error


def cannot_read(error: OSError) -> str:
    """The tools' line for an OSError from reading one of their inputs: "cannot read <file>: <reason>", the file
    being the one the error names (:func:`naming_the_file` names it where the read itself did not)."""
    return f"cannot read {error.filename or 'an input file'}: {error.strerror or error}"


def error_writing(error: OSError, path: str) -> bool:
    """Whether ``error`` came from writing ``path``: it names ``path`` or the temporary file beside it that the
    atomic writes here use (an error reading an input on the way names that input, or nothing); for a ``path``
    that is a link, the same of the file it names (where the writes through a link go)."""
    if not error.filename:
        return False
    name = os.path.abspath(os.fspath(error.filename))
    return any(name == full or (
        os.path.dirname(name) == os.path.dirname(full)
        and fnmatch.fnmatchcase(os.path.basename(name), atomic_temp_glob(glob.escape(os.path.basename(full)))))
        for full in {os.path.abspath(path), os.path.realpath(path)})


def atomic_temp_glob(name_glob: str) -> str:
    """The glob of the temporary files :func:`atomic_write` leaves behind for files named ``name_glob`` when the
    process is killed mid-write (``.<name>.<random>.tmp``)."""
    return f".{name_glob}.*.tmp"


def atomic_temp_files(path: str) -> list[str]:
    """The temporary files that atomic writes of ``path`` killed mid-write left behind: beside the file they replace,
    which for a link is the file it names (:func:`_replaced_file`), maybe in another folder. Only ``path``'s own: the
    random part that mkstemp adds has no dot, so ``.best.pth.old.x1y2.tmp`` (a temporary file of ``best.pth.old``)
    is not one of ``best.pth``'s."""
    target = _replaced_file(path)
    found = glob.glob(os.path.join(glob.escape(os.path.dirname(target)),
                                   atomic_temp_glob(glob.escape(os.path.basename(target)))))
    return [p for p in found if atomic_temp_target(os.path.basename(p)) == os.path.basename(target)]


def atomic_temp_target(temp_name: str) -> str:
    """The name of the file whose atomic write left the temporary file named ``temp_name``
    (``.<name>.<random>.tmp``, :func:`atomic_temp_glob`): the random part that mkstemp adds has no dot, so the name
    is all before the last dot. "" for a name of no such form."""
    if not temp_name.startswith(".") or not temp_name.endswith(".tmp"):
        return ""
    return temp_name[1:-len(".tmp")].rpartition(".")[0]


def _replaced_file(path: str) -> str:
    """The file an atomic write of ``path`` replaces. For a link, the file it names (or will name: a dangling link
    is written through as ``open()`` would), so that the link stays a link: a rename over the link itself put a
    regular file in its place, and a checkpoint, a cache or a shard linked from another store was cut off from it.
    A link to something other than a regular file (a device, a pipe, a folder) is replaced as before: a rename
    must never put a file in a device's place."""
    target = os.path.realpath(path)
    if os.path.lexists(target) and not os.path.isfile(target):
        return os.path.abspath(path)
    return target


def _temp_beside(path: str) -> tuple[str, int, str]:
    """(the file to replace, an open descriptor and the name of a new temporary file beside it), its folder made
    when missing; named as :func:`atomic_temp_glob` says."""
    target = _replaced_file(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    return target, fd, tmp


def _raise_interrupt_behind(error: BaseException) -> None:
    """Raise the Ctrl-C (or stop signal) that ``error`` was raised while handling, if any: a writer cut off by it
    in its clean-up (torch.save's zip writer closing a half-written archive: "unexpected pos ...") otherwise turns
    the interrupt into a crash with a traceback, and the process ends with 1 instead of as interrupted."""
    if not isinstance(error, Exception):
        return
    cause = error.__context__
    while cause is not None:
        if not isinstance(cause, (Exception, GeneratorExit)):  # KeyboardInterrupt, SystemExit, a stop signal
            raise cause from None
        cause = cause.__context__


def atomic_write(path: str, write: Callable[[BinaryIO], None], fsync: bool = True) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, flush (and fsync), then rename it over ``path``.

    The rename is atomic on POSIX file systems; on any failure the temporary file is removed and ``path`` is left
    as it was. The directory is created when missing. A ``path`` that is a link to a file is written through: the
    temporary file goes beside the file it names and replaces that one, and the link stays a link (as for every
    write here, :func:`_replaced_file`). A replaced file keeps its permission bits; a new one gets the mode a plain
    open() would give.
    """
    target, fd, tmp = _temp_beside(path)
    directory = os.path.dirname(target)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would (or the replaced file's), so
        # that an index cache or a list beside a shared dataset stays readable by the other users and jobs that
        # read the dataset.
        os.fchmod(fd, _mode_for(target))
        # a write() the disk refuses (full, over quota) names no file: a full disk was a traceback, or a line
        # that did not say which file
        with naming_the_file(target), os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_interrupt_behind(error)
        raise
    if fsync:  # persist the rename itself, so a power loss cannot bring back the old file under ``path``
        sync_folder(directory)


def sync_folder(directory: str) -> None:
    """fsync ``directory``, persisting a rename into it (or a file created in it)."""
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_by_name(path: str, write: Callable[[str], None]) -> None:
    """:func:`atomic_write` for writers that take a file name and open it themselves (safetensors' ``save_file``):
    ``write(tmp)`` for a temporary name beside ``path``, the mode of :func:`atomic_write`, then the rename. On any
    failure the temporary file is removed and ``path`` is left as it was; a failed write that the writer reports in
    an error of its own type, with the number of the OS error in its text (safetensors: "I/O error: No space left
    on device (os error 28)"), is raised as that OSError, naming ``path``. A ``path`` that is a link is written
    through as by :func:`atomic_write`. The file and the rename are synced, as by :func:`atomic_write`: an index
    line synced after a feature shard must not outlive the shard in a power loss."""
    target, fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(target))  # safetensors writes a private (0600) file
        with open(tmp, "rb") as written:  # what the writer wrote, on disk before the rename makes it the file
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_interrupt_behind(error)
        found = None if isinstance(error, OSError) else re.search(r"\(os error (\d+)\)", str(error))
        if found:
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), path) from error
        raise
    sync_folder(os.path.dirname(target))


def _mode_for(target: str) -> int:
    """The mode an atomic write gives ``target``: the permission bits of the file it replaces (a chmod 600 on a
    checkpoint, or 640 for a group, was undone by each write), else the mode a new file gets
    (:func:`new_file_mode`)."""
    try:
        found = os.stat(target)
    except OSError:
        return new_file_mode()
    return stat.S_IMODE(found.st_mode) & 0o777 if stat.S_ISREG(found.st_mode) else new_file_mode()


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file under the process's umask. Temporary files (mkstemp,
    safetensors' writer) are private (0600): a new file renamed from one into place gets this mode first (a
    replaced file's mode is kept)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the kernel reports it (changing it, even briefly,
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), fsync=fsync)


# The names of a process's open files: /dev/stdout, /dev/fd/3, /proc/self/fd/1 (what a shell's >(...) hands over)
_OPEN_FILE_ALIAS = re.compile(r"/dev/(stdout|stderr|fd/\d+)|/proc/(self|thread-self|\d+)/fd/\d+")


def write_output_text(path: str, text: str) -> None:
    """Write a tool's ``--out`` file: a regular file (or a new name) atomically (:func:`atomic_write_text`, which
    writes through a link to the file it names, the link kept); a named pipe, a device or an open file's alias
    (``/dev/stdout``, the ``/dev/fd/N`` of a shell's ``>(...)``) straight, as any program writes them: a rename
    would put a file in the pipe's or device's place, and where no file can be made (``/dev/fd``) it failed after
    all the work. An alias is written after what the process printed (stdout and stderr are flushed first) and
    appended to, as the stream it names goes on: opened to be replaced, it emptied the file a shell's ``>>`` (or
    ``>``, after the table printed) sends stdout to. A file name in ``text`` whose bytes are not UTF-8 (surrogates,
    as the file system hands it over) is written as those bytes: it raised after all the work. The file is synced
    before its rename and the rename after (as a checkpoint is): it is a result the user keeps."""
    full = os.path.abspath(path)
    alias = bool(_OPEN_FILE_ALIAS.fullmatch(full))
    if alias or (os.path.exists(full) and not os.path.isfile(full)):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # none, or closed
                stream.flush()
        with open(full, "a" if alias else "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    else:
        atomic_write(full, lambda f: f.write(text.encode("utf-8", "surrogateescape")))


def output_path_problem(path: str, flag: str, folder: bool, example: str = "") -> str:
    """Why an output target cannot be written ("" when it can), in one line naming ``flag``: ``path`` must be (or
    become) a folder when ``folder``, else a file (``example``: a file name to suggest inside a folder given
    instead), under a folder that exists or can be made, and that this process can write in. An existing file (not
    a pipe, a device or ``/dev/stdout``) is replaced by a new file written beside it: its folder must take one too.
    For a tool to refuse before it works, not after."""
    if not path:  # abspath("") is the current folder, which passed the checks; the writes of "" then failed
        return f"{flag} is empty; give a {'folder' if folder else 'file name'}" + (
            f", e.g. {example}" if example and not folder else "")
    full = os.path.abspath(path)
    inside = f", e.g. {os.path.join(path, example)}" if example else ""
    if folder and os.path.exists(full) and not os.path.isdir(full):
        return f"{flag} {path} exists and is not a folder; give a folder (new or existing)"
    if not folder and os.path.isdir(full):
        return f"{flag} {path} is a folder; give a file name{inside}"
    # a folder not made yet: abspath drops the "/", and a file of the folder's name was written
    if not folder and path.endswith(("/", os.sep)):
        return f"{flag} {path} names a folder (it ends with /); give a file name{inside}"
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{flag} {path}: {parent} is a file, so no folder can be made there"
    target = full if os.path.exists(full) else parent
    # access() says "no" for it as for a refused permission, which is not the fix; a pipe or a device on it can
    # still be written
    if (os.path.isdir(target) or os.path.isfile(target)) and _read_only_file_system(target):
        return f"{flag} {path}: {target} is on a read-only file system"
    if not os.access(target, os.W_OK):
        return f"{flag} {path}: no permission to write {target}"
    if os.path.isdir(target):
        problem = _cannot_write_in(target)
        if problem:
            return f"{flag} {path}: cannot write in {target} ({problem})"
    elif os.path.isfile(target) and not _OPEN_FILE_ALIAS.fullmatch(full):
        # an existing file is replaced atomically: a new file beside it (beside the file a link names), renamed over
        # it, needs its folder writable, not only the file; that failed once all the work was done
        folder_of = os.path.dirname(_replaced_file(full))
        problem = _cannot_write_in(folder_of)
        if problem:
            return (f"{flag} {path}: cannot write in its folder {folder_of} ({problem}), where the new file is "
                    f"written before it replaces {os.path.basename(full)}; give {flag} a file in a folder you can "
                    "write in")
    return ""


def _cannot_write_in(folder: str) -> str:
    """Why no file can be made in ``folder`` ("" when one can): access() first, then a file made and removed, for
    what access() cannot tell (root everywhere, a folder of a virtual file system such as /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return ""


def make_output_folder(path: str, flag: str) -> None:
    """Make the output folder ``path`` (and the folders above it) when missing. A failure raises
    :class:`~evautil.errors.OutputFolderError`, one line naming ``flag`` (``--out``, ``OUTPUT =``) and ``path``:
    the OSError alone ("[Errno 2] No such file or directory: '/proc/out'") said neither which setting to change
    nor, for a folder above it, that the path was not at fault itself. (A check with :func:`output_path_problem`
    comes first; this is for what it cannot foresee: a name too long, a folder above removed meanwhile.)"""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        made = os.path.abspath(os.fspath(e.filename)) if e.filename else os.path.abspath(path)
        where = "" if made == os.path.abspath(path) else f" {made} above it"
        raise OutputFolderError(f"{flag} {path}: cannot create the folder{where} ({e.strerror or e})") from e


def _read_only_file_system(path: str) -> bool:
    """Whether ``path`` is on a file system mounted read-only (False where that cannot be asked)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def hold_lock(path: str) -> IO[str] | None:
    """Open ``path`` (created, with its folder, if need be) and hold an exclusive lock on it until the returned file
    is closed (or the process ends); None when another open file holds it (another process, or this one through
    another ``hold_lock``). On a file system without locks the file is returned unlocked: what it guards runs
    unguarded, as without it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    f = open(path, "a", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError:
        pass
    return f


def lock_is_free(path: str) -> bool:
    """Whether no process holds :func:`hold_lock`'s lock on ``path``, asked through a file opened read-only (flock
    needs no write access: a lock this user may not open to write, in a read-only folder or another user's); True
    when that cannot be asked either (no such file, or not readable)."""
    try:
        with open(path, encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # the lock taken here goes with the file's close
