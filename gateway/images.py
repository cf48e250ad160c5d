"""Images a request carries (start and end frames): where they may come from and how they are checked.

An image is an http(s) URL, a ``data:image/...;base64,`` URI or, in the library and the CLI
only, a local file; each is checked when the request is built so the error names the field
(``gateway.media``, as a source video is).
"""

from __future__ import annotations

import base64
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gateway.media import Media

MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: the one answer for any image that is not a URL, a data URI or an upload, when local
#: files are off (the HTTP service): it must not tell which server paths exist
NO_LOCAL_FILES = ("must be an http(s) URL or a data:image/...;base64 URI (or an upload); "
                  "server file paths are not accepted")


class ImageKind(StrEnum):
    URL = "url"
    DATA_URI = "data_uri"
    PATH = "path"


_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def sniff_image_type(data: bytes) -> str | None:
    """The image MIME type from magic bytes, or None when ``data`` is not an image we know."""
    for magic, mime in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


IMAGE = Media(type="image", formats="a PNG, JPEG, GIF or WebP image", sniff=sniff_image_type,
              max_data_uri_bytes=MAX_IMAGE_BYTES, max_file_bytes=MAX_IMAGE_BYTES, no_local_files=NO_LOCAL_FILES)
#: a data URI of MAX_IMAGE_BYTES
MAX_DATA_URI_CHARS = IMAGE.max_data_uri_chars


class ImageInput(BaseModel):
    """A start or end frame: an http(s) URL, a ``data:image/...;base64,`` URI, or a local file.

    A local file is checked when the request is built (exists, readable, really an
    image) so the error names the field rather than surfacing at a vendor.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ImageKind
    value: str

    @classmethod
    def parse(cls, value: str | Path | ImageInput, *, local_files: bool = True) -> ImageInput:
        """``local_files=False`` (the HTTP service) refuses anything but a URL or a data URI
        without looking at the filesystem."""
        if isinstance(value, ImageInput):
            if value.kind is ImageKind.PATH and not local_files:
                raise ValueError(NO_LOCAL_FILES)
            return value
        kind, parsed = IMAGE.classify(value, local_files=local_files)
        return cls(kind=ImageKind(kind), value=parsed)

    def as_data_uri(self) -> str:
        """The image inlined as a data URI (for vendors that accept them)."""
        if self.kind is ImageKind.DATA_URI:
            return self.value
        if self.kind is ImageKind.PATH:
            data, mime = IMAGE.read_file(Path(self.value))
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        raise ValueError("a remote URL cannot be inlined without fetching it")

    def describe(self) -> str:
        """A log-safe description (a data URI is never printed whole)."""
        if self.kind is ImageKind.DATA_URI:
            return f"data URI ({len(self.value)} chars)"
        return self.value
