"""Writing outputs so that a failed run leaves nothing half-written (no TensorFlow needed).

Every file is written to a temporary name beside its destination and renamed
into place only when complete; :func:`publish` does so for all outputs of a
run at once. A temporary carries the id of the process writing it: the next
write to the same place removes those of processes that no longer run (a
killed run's), never a live one's. Files get ordinary permissions (0666 minus
the umask, 0644 by default), not the 0600 of :func:`tempfile.mkstemp`.

What may be replaced: :func:`check_output` refuses, before any work, an
existing output unless the caller was asked to replace it (``overwrite``),
any path that is not a regular file or directory (a device, a FIFO, a
dangling symlink), and the command's own inputs. :func:`lock` keeps two
processes from writing the same output at once.
"""

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from rdinet_lite.errors import InputError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_pid(name, prefix):
    """The process id in a temporary's ``name`` (after ``prefix``), or None if it is not one of ours."""
    rest = name[len(prefix):]
    pid = rest.split("-", 1)[0].split(".", 1)[0]
    return int(pid) if pid.isdigit() else None


def _remove_stale(folder, prefix, suffix=""):
    """Remove the temporaries ``prefix<pid>-...suffix`` that processes no longer running left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for stale in folder.glob(f"{glob_escape(prefix)}*{glob_escape(suffix)}"):
        pid = _writer_pid(stale.name, prefix)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def glob_escape(text):
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _temporary_beside(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, dot, suffix = path.name.partition(".")  # all suffixes kept: x.weights.h5 -> .x.<pid>-...weights.h5
    prefix, suffix = f".{stem}.", dot + suffix
    _remove_stale(path.parent, prefix, suffix)
    fd, temporary = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(temporary, 0o666 & ~_umask())
    return Path(temporary)


def _same(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path, directory=True, option="--out", overwrite=True, inputs=()):
    """One clear error, before any work, if outputs cannot be written at ``path``.

    ``path`` is a directory to create or fill (``directory=True``) or a file
    to write; it must not be the other kind, nor anything else (a device, a
    FIFO, a dangling symlink), and the nearest existing folder on its way must
    accept new files (probed by creating one). An existing file is refused
    unless ``overwrite``; ``inputs`` (paths the command reads) are never
    outputs: neither ``path`` itself nor, for a directory, a file in it.
    """
    if not str(path).strip():
        raise InputError(f"{option} is empty; name the {'directory' if directory else 'file'} to write")
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"{option} {path} is a symlink to {os.readlink(path)}, which does not exist; "
                         f"choose another {option}")
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        source = Path(source)
        if _same(source, path):
            raise InputError(f"{option} {path} is the input {source}: writing there would destroy it; "
                             f"choose another {option}")
        if directory and path.is_dir() and _same(source.parent, path):
            raise InputError(f"{option} {path} holds the input {source}: writing there could destroy it; "
                             f"choose another {option}")
    if path.exists() and not (path.is_dir() or path.is_file()):
        raise InputError(f"{option} {path} is not a regular file or directory (a device, FIFO or socket); "
                         f"choose another {option}")
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        raise InputError(f"{option} {path} is {kind}; pass a {'directory' if directory else 'file path'} "
                         "(it is created if missing)")
    if not directory and path.exists() and not overwrite:
        raise InputError(f"{option} {path} already exists; pass --overwrite to replace it or choose another "
                         f"{option}")
    folder = path if directory else path.parent
    while not folder.exists():
        if folder.is_symlink():
            raise InputError(f"{option} {path} lies under the dangling symlink {folder}; choose another {option}")
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path} lies under {folder}, which is a file; choose another {option}")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise InputError(f"{option} {path}: cannot write into {folder} ({error.strerror}); "
                         f"choose a writable {option}") from None


def _check_destination(path, replace):
    if os.path.lexists(path):
        if path.is_dir() or not path.is_file():
            raise InputError(f"{path} exists and is not a regular file: it is not replaced; move it away")
        if not replace:
            raise InputError(f"{path} appeared while this command ran (another process wrote it?): it is not "
                             "replaced; pass --overwrite or choose another --out")


def publish(out_dir, writers, replace=True):
    """Write every output of a run into ``out_dir``, all of them or none.

    ``writers`` maps a file name to ``write(path)``, which writes that output
    to the temporary ``path`` it is given. The outputs are renamed into place
    only after all writers succeeded; on any failure the temporaries are
    removed and ``out_dir`` is left as it was (a directory created here is
    removed again). Only regular files are replaced, and only with
    ``replace``; otherwise an existing output is an :class:`InputError`.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, option="output directory")
    created = not out_dir.exists()
    staged, placed = {}, []
    try:
        for name, write in writers.items():
            _check_destination(out_dir / name, replace)
            staged[name] = _temporary_beside(out_dir / name)
            write(str(staged[name]))
        for name in staged:
            _check_destination(out_dir / name, replace)
        for name, temporary in staged.items():
            if replace:
                os.replace(temporary, out_dir / name)
            else:
                try:
                    os.link(temporary, out_dir / name)  # fails if the name exists: nothing is replaced
                except FileExistsError:
                    _check_destination(out_dir / name, False)
                    raise
                placed.append(out_dir / name)
                temporary.unlink()
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def finite_json(data):
    """``data`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def json_writer(data):
    """A :func:`publish` writer of ``data`` as indented, valid JSON (NaN and infinities written as null)."""

    def write(path):
        with open(path, "w") as stream:
            json.dump(finite_json(data), stream, indent=2, allow_nan=False)
            stream.write("\n")

    return write


def write_json(path, data):
    """Write ``data`` as indented JSON to ``path``, atomically."""
    path = Path(path)
    publish(path.parent, {path.name: json_writer(data)})


def check_replaceable(out_dir, overwrite=False, inputs=()):
    """What :func:`staged_directory` requires of ``out_dir``, checked before any work."""
    if not str(out_dir).strip():
        raise InputError("--out is empty; name the directory to write")
    out_dir = Path(out_dir)
    check_output(out_dir, option="--out", inputs=inputs)
    for source in inputs:  # the directory is replaced as a whole: nothing under it may be an input
        if source is not None and out_dir.is_dir() and Path(source).resolve().is_relative_to(out_dir.resolve()):
            raise InputError(f"--out {out_dir} holds the input {source}: replacing it would destroy the input; "
                             "choose another --out")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise InputError(f"{out_dir} already exists and is not an empty directory; choose another "
                         "--out or pass --overwrite (overwrite=True)")
    check_output(out_dir.parent, option="the folder of")


class Lock:
    """An exclusive lock on the output ``path``: the file ``.<name>.lock`` beside it, locked with ``flock``.

    The kernel releases the lock when its process ends, so a killed run never
    leaves it stuck; :meth:`release` also removes the file.
    """

    def __init__(self, path):
        path = Path(path)
        self.path = path.parent / f".{path.name}.lock"
        self.target = path
        self._fd = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = self._holder()
                raise InputError(f"another process{f' (pid {holder})' if holder else ''} is writing "
                                 f"{self.target}; wait for it to end or choose another --out") from None
            try:  # the file may have been removed by its last holder between open and flock: retry
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _holder(self):
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip())
        return None

    def release(self):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock(path):
    """A :class:`Lock` of the output ``path``, for ``with``."""
    return Lock(path)


@contextlib.contextmanager
def staged_directory(out_dir, overwrite=False, inputs=()):
    """Yield an empty temporary directory that replaces ``out_dir`` if the block succeeds.

    ``out_dir`` must not exist or be empty unless ``overwrite``, and must not
    hold an input; an old directory is removed only after the new one is in
    place. ``out_dir`` is locked (:class:`Lock`) meanwhile.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir, overwrite, inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock(out_dir):
        check_replaceable(out_dir, overwrite, inputs)  # as it is now that nobody else writes it
        _remove_stale(out_dir.parent, f".{out_dir.name}.tmp-")
        _remove_stale(out_dir.parent, f".{out_dir.name}.old-")
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
        os.chmod(staging, 0o777 & ~_umask())
        try:
            yield staging
            for path in staging.iterdir():
                os.chmod(path, 0o666 & ~_umask())
            old = None
            if out_dir.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
                os.replace(out_dir, old / out_dir.name)
            os.replace(staging, out_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
