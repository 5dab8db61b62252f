"""The upload API's pure parts (API.md section 8): which images it takes, what it answers.

An image used by many jobs is uploaded once and then named by a short ``ssupload:?id=...`` URI
instead of megabytes of base64 in every create body. ``ViduClient.upload_image`` does the I/O.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Final

from vidu_async.errors import FieldProblem, ResponseFormatError, ValidationError
from vidu_async.media import MediaSource, inspect_media, is_local, is_upload_uri, is_url

__all__ = ["UPLOAD_MAX_BYTES", "UPLOAD_SCENE", "read_upload_image", "upload_uri"]

UPLOAD_SCENE: Final = "vidu"
"""The ``scene`` the upload API's first call names."""
UPLOAD_MAX_BYTES: Final = 10 * 1024 * 1024
"""Uploaded images must be under 10 MB."""
_FIELD = "image"


def read_upload_image(source: MediaSource) -> tuple[bytes, str]:
    """The bytes of a local image (a path, bytes or a data URI) and their content type, if the
    upload API takes it; ``ValidationError`` listing every problem otherwise.

    Blocking (it reads the file): async code calls it through ``asyncio.to_thread``.
    """
    if is_url(source) or is_upload_uri(source):
        raise ValidationError(
            [FieldProblem(_FIELD, "upload a local file, bytes or a data URI, not a URI")]
        )
    info = inspect_media(source, "image", field=_FIELD)
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and not is_local(source):
        data = base64.b64decode(source.partition(",")[2])
    else:
        with open(os.fspath(source), "rb") as handle:
            data = handle.read()
    if len(data) >= UPLOAD_MAX_BYTES:
        raise ValidationError(
            [FieldProblem(_FIELD, f"{info.label}: {len(data):,} bytes; uploads must be under "
                                  f"{UPLOAD_MAX_BYTES // 1_048_576} MB")]
        )
    assert info.content_type is not None  # probed from the magic bytes
    return data, info.content_type


def upload_uri(answer: Any, upload_id: str) -> str:
    """The ``ssupload:`` URI of the ``finish`` answer, checked to name ``upload_id``."""
    uri = answer.get("uri") if isinstance(answer, dict) else None
    if not (isinstance(uri, str) and uri.startswith("ssupload:")):
        raise ResponseFormatError("the upload API's finish answered without a uri", field="uri")
    if uri != f"ssupload:?id={upload_id}":
        raise ResponseFormatError(
            f"the upload API's finish answered {uri!r} for upload {upload_id!r}", field="uri"
        )
    return uri
