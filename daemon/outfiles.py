"""Writing output files (MIDI takes, recordings, model bundles) safely.

Every output goes to a temporary file beside the target and is renamed into
place, so a failed or interrupted write never damages an existing file. The
rename replaces whatever the path names, so `check_output_path` first makes
sure the path names a regular file, or nothing yet, in an existing folder:
a device such as /dev/null or a folder is never replaced.
"""

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InvalidInputError


def check_output_path(path: str | os.PathLike, description: str) -> Path:
    """Return `path` as a Path when a file can be written there; raise InvalidInputError naming `description` (e.g. "recording") otherwise."""
    text = os.fspath(path)
    if not text or text.endswith(os.sep):
        raise InvalidInputError(f"invalid {description} path {text!r}: expected a file name")

    target = Path(text)
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file"
        raise InvalidInputError(f"{description} {target} is {kind}; give the path of a file to write")

    folder = target.parent
    if not folder.is_dir():
        raise InvalidInputError(f"cannot write {description} {target}: folder {folder} not found")
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"cannot write {description} {target}: folder {folder} is not writable")
    return target


@contextmanager
def replacing(path: str | os.PathLike, description: str) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for writing; rename it onto `path` when the block succeeds.

    The new file gets the usual permissions from the umask (mkstemp's would
    be readable by its owner only). On any error the temporary file is removed
    and the old file stays as it was.
    """
    target = check_output_path(path, description)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
