"""Writing host files in folders a kernel can also write, without following what the kernel planted.

The attack: the run's working folder is the notebook's folder, so code in the kernel can put a
symlink where the host is about to write (the notebook itself, a predictable temporary name beside
it, ``status.jsonl``) and have the host overwrite a file of its choosing, with the host's rights.

The defence, in one place so every host write gets it:

- :func:`write_atomic` (and :func:`copy_atomic`, for data files) creates its temporary file with
  a random name, ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so it is a new regular file, never an existing
  file or a symlink's target), relative to a handle on the target's folder, and renames it over the
  target. A rename replaces a symlink at the target's name; it does not write through it.
- :func:`append_line` opens with ``O_NOFOLLOW``, so a symlink planted at the name is refused.
- :func:`check_writable_folder` (and :func:`creation_problem`, for paths yet to be made) finds
  out, before a run starts, whether a folder takes new files (``/proc``, a read-only mount), so
  bad output paths fail as input errors, not after the run.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class UnsafeFileError(OSError):
    """Raised when a file the host writes is a symlink (planted, most likely, by code in a kernel)."""


def _temporary_name(target: str) -> str:
    return f".{target}.{secrets.token_hex(8)}.nbagent-tmp"


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, *, errors: str = "strict", mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data`` all at once; never writes through a symlink.

    ``data`` as text is encoded as UTF-8 with the ``errors`` handler of :func:`open`. The file is
    complete on disk (fsync'ed) before it takes the target's name, so a reader sees the old
    content or the new one, never a part.
    """
    payload = data.encode("utf-8", errors) if isinstance(data, str) else data
    _replace(Path(path), lambda f: f.write(payload), mode)


def copy_atomic(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy the file ``source`` to ``path`` as :func:`write_atomic` writes (streamed, any size)."""
    with open(source, "rb") as src:
        _replace(Path(path), lambda f: shutil.copyfileobj(src, f, 1 << 20), 0o644)
    shutil.copystat(source, path, follow_symlinks=False)


def _replace(target: Path, write: Callable[[BinaryIO], object], mode: int) -> None:
    folder = os.open(target.parent, _DIRECTORY)
    try:
        for _ in range(8):
            tmp = _temporary_name(target.name)
            try:
                fd = os.open(tmp, _CREATE, mode, dir_fd=folder)
                break
            except FileExistsError:  # 64 random bits already taken: someone is guessing; pick again
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=folder)
            except OSError:
                pass
            raise
    finally:
        os.close(folder)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line of text to ``path`` (created if missing) and make sure it is on disk.

    If the file does not end with a newline (a writer died mid-line), one is added first, so the
    new line stays whole. A symlink at ``path`` is refused with :class:`UnsafeFileError`.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(
                errno.ELOOP, f"{os.fspath(path)} is a symlink; nbagent does not write through symlinks"
            ) from None
        raise
    with os.fdopen(fd, "r+b") as f:
        text = line if line.endswith("\n") else line + "\n"
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def check_writable_folder(folder: str | os.PathLike[str]) -> str | None:
    """Why new files cannot be made in ``folder`` (an existing folder), or ``None`` when they can.

    Tried for real (a temporary file made and removed at once): permission bits say nothing
    about ``/proc``, read-only mounts or root.
    """
    try:
        fd = os.open(folder, _DIRECTORY)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        tmp = _temporary_name("probe")
        try:
            os.close(os.open(tmp, _CREATE, 0o600, dir_fd=fd))
        except OSError as exc:
            return exc.strerror or str(exc)
        try:
            os.unlink(tmp, dir_fd=fd)
        except OSError:
            pass
        return None
    finally:
        os.close(fd)


def creation_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (a file or folder, with any missing parent folders) could not be made, or ``None``.

    Checked on the nearest folder that exists, without making anything: a refused command must
    leave nothing on disk.
    """
    existing = Path(os.path.abspath(Path(path).expanduser()))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is not a folder"
    problem = check_writable_folder(existing)
    return None if problem is None else f"{str(existing)!r} does not take new files ({problem})"
