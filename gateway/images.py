"""Images a request carries (start and end frames): where they may come from and how they are checked.

An image is an http(s) URL, a ``data:image/...;base64,`` URI or, in the library and the CLI
only, a local file; each is checked when the request is built so the error names the field.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from gateway import request_limits as limits

MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: a data URI of MAX_IMAGE_BYTES: base64 is 4 characters per 3 bytes, plus the header
MAX_DATA_URI_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 100
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
        text = str(value).strip()
        if not text:
            raise ValueError("is empty")
        if text.startswith("data:"):
            if len(text) > MAX_DATA_URI_CHARS:
                raise ValueError(f"data URI is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
            _decode_data_uri(text)
            return cls(kind=ImageKind.DATA_URI, value=text)
        scheme = urlsplit(text).scheme.lower()
        if scheme in ("http", "https"):
            if len(text) > limits.MAX_URL_CHARS:
                raise ValueError(f"URL is longer than {limits.MAX_URL_CHARS} characters")
            if not urlsplit(text).netloc:
                raise ValueError(f"URL {text!r} has no host")
            return cls(kind=ImageKind.URL, value=text)
        if not local_files:
            raise ValueError(NO_LOCAL_FILES)
        if scheme and len(scheme) > 1:  # "C:" style drive letters are paths
            raise ValueError(f"unsupported URL scheme {scheme!r}: use http(s), a data URI or a file path")
        path = Path(text).expanduser()
        _read_image_file(path)
        return cls(kind=ImageKind.PATH, value=str(path.resolve()))

    def as_data_uri(self) -> str:
        """The image inlined as a data URI (for vendors that accept them)."""
        if self.kind is ImageKind.DATA_URI:
            return self.value
        if self.kind is ImageKind.PATH:
            data, mime = _read_image_file(Path(self.value))
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        raise ValueError("a remote URL cannot be inlined without fetching it")

    def describe(self) -> str:
        """A log-safe description (a data URI is never printed whole)."""
        if self.kind is ImageKind.DATA_URI:
            return f"data URI ({len(self.value)} chars)"
        return self.value


def _decode_data_uri(text: str) -> bytes:
    head, sep, payload = text.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError("data URI must look like data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data URI payload is not valid base64") from None
    if sniff_image_type(data) is None:
        raise ValueError("data URI does not contain a PNG, JPEG, GIF or WebP image")
    return data


def _read_image_file(path: Path) -> tuple[bytes, str]:
    if not path.exists():
        raise ValueError(f"file {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"file {str(path)!r} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"file {str(path)!r} cannot be read ({exc.strerror})") from None
    mime = sniff_image_type(data)
    if mime is None:
        guessed = mimetypes.guess_type(path.name)[0] or "unknown type"
        raise ValueError(f"file {str(path)!r} is not a PNG, JPEG, GIF or WebP image ({guessed})")
    return data, mime
