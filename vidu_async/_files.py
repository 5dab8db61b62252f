"""Output files replaced whole: what a user reads (or submits) is never half written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["replaced_whole"]


@contextlib.contextmanager
def replaced_whole(path: Path) -> Iterator[TextIO]:
    """A text file for ``path``'s new content, renamed over ``path`` when the block ends
    without an error (whole or not at all). A device or a pipe (``/dev/null``) is written
    to directly instead: renaming a file over it would replace the device for everyone."""
    if path.exists() and not path.is_file():
        with path.open("w", encoding="utf-8") as handle:
            yield handle
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
