"""Writing outputs so that a failed run leaves nothing half-written (no TensorFlow needed).

Every file is written to a temporary name beside its destination and renamed
into place only when complete; :func:`publish` does so for all outputs of a
run at once. Temporaries a killed run left behind are removed by the next
write to the same place. Files get ordinary permissions (0666 minus the umask, 0644 by
default), not the 0600 of :func:`tempfile.mkstemp`.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from rdinet_tf.errors import InputError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(folder, pattern):
    """Remove what an earlier, killed run left under the temporary names ``pattern``."""
    for stale in Path(folder).glob(pattern) if Path(folder).is_dir() else []:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _temporary_beside(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, f".{path.stem}.*{path.suffix}")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(temporary, 0o666 & ~_umask())
    return Path(temporary)


def check_output(path, directory=True, option="--out"):
    """One clear error, before any work, if outputs cannot be written at ``path``.

    ``path`` is a directory to create or fill (``directory=True``) or a file
    to write; it must not be the other kind, and the nearest existing folder
    on its way must accept new files (probed by creating one).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        raise InputError(f"{option} {path} is {kind}; pass a {'directory' if directory else 'file path'} "
                         "(it is created if missing)")
    folder = path if directory else path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path} lies under {folder}, which is a file; choose another {option}")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise InputError(f"{option} {path}: cannot write into {folder} ({error.strerror}); "
                         f"choose a writable {option}") from None


def publish(out_dir, writers):
    """Write every output of a run into ``out_dir``, all of them or none.

    ``writers`` maps a file name to ``write(path)``, which writes that output
    to the temporary ``path`` it is given. The outputs are renamed into place
    only after all writers succeeded; on any failure the temporaries are
    removed and ``out_dir`` is left as it was (a directory created here is
    removed again).
    """
    out_dir = Path(out_dir)
    check_output(out_dir, option="output directory")
    created = not out_dir.exists()
    staged = {}
    try:
        for name, write in writers.items():
            staged[name] = _temporary_beside(out_dir / name)
            write(str(staged[name]))
        for name, temporary in staged.items():
            os.replace(temporary, out_dir / name)
    except BaseException:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def json_writer(data):
    """A :func:`publish` writer of ``data`` as indented JSON."""

    def write(path):
        with open(path, "w") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")

    return write


def write_json(path, data):
    """Write ``data`` as indented JSON to ``path``, atomically."""
    path = Path(path)
    publish(path.parent, {path.name: json_writer(data)})


def check_replaceable(out_dir, overwrite=False):
    """What :func:`staged_directory` requires of ``out_dir``, checked before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise InputError(f"{out_dir} already exists and is not an empty directory; choose another "
                         "--out or pass --overwrite (overwrite=True)")
    check_output(out_dir.parent, option="the folder of")


@contextlib.contextmanager
def staged_directory(out_dir, overwrite=False):
    """Yield an empty temporary directory that replaces ``out_dir`` if the block succeeds.

    ``out_dir`` must not exist or be empty unless ``overwrite``; an old
    directory is removed only after the new one is in place.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir.parent, f".{out_dir.name}.tmp-*")
    _remove_stale(out_dir.parent, f".{out_dir.name}.old-*")
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        for path in staging.iterdir():
            os.chmod(path, 0o666 & ~_umask())
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
