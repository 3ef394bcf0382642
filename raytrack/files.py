"""Writing files so that a crash or kill never leaves a half-written one under the real name.

Every file raytrack writes (shards, manifests, checkpoints, exports, reports) goes to a unique
temporary sibling first and is renamed onto its final name only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A temporary file is ".FINAL.XXXXXXXX.raytrack-partial": hidden, unique per writer, and ending
# in a suffix no user's file has, so that cleaning up leftovers can never touch a user's file
# (a plain ".tmp" suffix matched a user's ".notes.tmp").
TEMPORARY_SUFFIX = ".raytrack-partial"
_TEMPORARY_NAME = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX))


@contextlib.contextmanager
def replacing(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` if the block succeeds.

    The name is unique per writer, so two writers (a restarted run and a straggler of the killed
    one) never share a temporary file. On an exception the temporary file is removed.
    """
    final = Path(final)
    handle, name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=TEMPORARY_SUFFIX, dir=final.parent
    )
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_target(path: Path) -> str | None:
    """The final name a leftover of :func:`replacing` (from a killed writer) was meant for;
    ``None`` for any other file."""
    match = _TEMPORARY_NAME.fullmatch(path.name)
    return match.group("final") if match else None


def is_temporary(path: Path) -> bool:
    """A leftover of :func:`replacing` (from a killed writer), never a result."""
    return temporary_target(path) is not None


def check_writable(path: str | os.PathLike, option: str, *, is_file: bool = False) -> None:
    """Raise ``ValueError`` naming ``option`` and ``path`` unless ``path`` can be written: the
    directory ``path`` (created if missing), or with ``is_file`` a file in ``path``'s directory.

    Meant for a command's output options, before anything starts: otherwise a read-only
    filesystem (which stops root too) or a path under a regular file is an ``OSError``
    traceback after minutes of work. Writes nothing that stays: permission bits do not tell
    (root ignores them, ``os.access`` says yes on sysfs), so a probe file is created in the
    nearest existing directory and removed at once.
    """
    target = Path(path)
    directory = target.parent if is_file else target
    where = f"{option} {path}"
    existing = Path(".")
    try:
        if is_file and target.is_dir():
            raise ValueError(f"{where}: is a directory, not a file")
        existing = next((p for p in (directory, *directory.parents) if p.exists()), existing)
        if not existing.is_dir():
            raise ValueError(f"{where}: cannot be written: {existing} is not a directory")
        handle, probe = tempfile.mkstemp(
            prefix=".write-check.", suffix=TEMPORARY_SUFFIX, dir=existing
        )
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"{where}: cannot be written in {existing}: {reason}") from None
    os.close(handle)
    os.unlink(probe)


def read_toml(path: Path, error: type[Exception], what: str) -> dict[str, Any]:
    """A TOML file's content; a missing or malformed file raises ``error`` naming it."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"{path}: not valid TOML: {err}") from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
