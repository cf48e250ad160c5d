"""One way to read a media reference a request carries: an image (start and end frames,
``gateway.images``) or a source video (``gateway.operations``).

Both are an http(s) URL, a ``data:<type>/...;base64,`` URI or, in the library and the CLI
only, a local file; each is checked when the request is built so the error names the field.
They differ only in data (``Media``): the data URI's type, how the bytes are recognised, the
caps, and the words of the errors.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from gateway import request_limits as limits

MIB = 1024 * 1024


class Reference(Protocol):
    """A parsed reference (``ImageInput``, ``SourceVideo``)."""

    @property
    def kind(self) -> StrEnum: ...


R = TypeVar("R", bound=Reference)


@dataclass(frozen=True)
class Media:
    """What one kind of media reference may be."""

    #: the data URI's media type, as in ``data:image/...``
    type: str
    #: what the bytes must be, for errors: "a PNG, JPEG, GIF or WebP image"
    formats: str
    #: the MIME type from magic bytes, or None when the bytes are not this media
    sniff: Callable[[bytes], str | None]
    max_data_uri_bytes: int
    max_file_bytes: int
    #: the one answer for anything but a URL or a data URI when local files are off (the HTTP
    #: service): it must not tell which server paths exist
    no_local_files: str

    @property
    def max_data_uri_chars(self) -> int:
        """A data URI of ``max_data_uri_bytes``: base64 is 4 characters per 3 bytes, plus the header."""
        return self.max_data_uri_bytes * 4 // 3 + 100

    def classify(self, value: str | Path, *, local_files: bool) -> tuple[str, str]:
        """``("data_uri" | "url" | "path", value)`` for a reference, or ValueError naming what
        is wrong. ``local_files=False`` refuses anything but a URL or a data URI without
        looking at the filesystem; a path is resolved and checked."""
        text = str(value).strip()
        if not text:
            raise ValueError("is empty")
        if text.startswith("data:"):
            if len(text) > self.max_data_uri_chars:
                raise ValueError(f"data URI is larger than {self.max_data_uri_bytes // MIB} MiB")
            self.decode_data_uri(text)
            return "data_uri", text
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if len(text) > limits.MAX_URL_CHARS:
                raise ValueError(f"URL is longer than {limits.MAX_URL_CHARS} characters")
            if not parts.netloc:
                raise ValueError(f"URL {text!r} has no host")
            return "url", text
        if not local_files:
            raise ValueError(self.no_local_files)
        if scheme and len(scheme) > 1:  # "C:" style drive letters are paths
            raise ValueError(f"unsupported URL scheme {scheme!r}: use http(s), a data URI or a file path")
        path = Path(text).expanduser()
        self.read_file(path)
        return "path", str(path.resolve())

    def decode_data_uri(self, text: str) -> bytes:
        head, sep, payload = text.partition(",")
        if not sep or not head.startswith(f"data:{self.type}/") or not head.endswith(";base64"):
            raise ValueError(f"data URI must look like data:{self.type}/<type>;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data URI payload is not valid base64") from None
        if self.sniff(data) is None:
            raise ValueError(f"data URI does not contain {self.formats}")
        return data

    def read_file(self, path: Path) -> tuple[bytes, str]:
        """The file's bytes and MIME type, or ValueError naming what is wrong with it."""
        if not path.exists():
            raise ValueError(f"file {str(path)!r} does not exist")
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a file")
        if path.stat().st_size > self.max_file_bytes:
            raise ValueError(f"file {str(path)!r} is larger than {self.max_file_bytes // MIB} MiB")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"file {str(path)!r} cannot be read ({exc.strerror})") from None
        mime = self.sniff(data)
        if mime is None:
            guessed = mimetypes.guess_type(path.name)[0] or "unknown type"
            raise ValueError(f"file {str(path)!r} is not {self.formats} ({guessed})")
        return data, mime


def from_caller(value: Any, parse: Callable[[Any], R], no_local_files: str) -> R:
    """A reference a caller of the HTTP service sent, parsed with ``parse`` (local files off).
    The stored form ``{"kind", "value"}`` is trusted only from a store or the library: from a
    caller it is never a path, its value is checked like any other, and it must be of the
    kind it claims."""
    if not isinstance(value, dict):
        return parse(value)
    if value.get("kind") == "path" or not isinstance(value.get("value"), str):
        raise ValueError(no_local_files)
    parsed = parse(value["value"])
    if set(value) != {"kind", "value"} or parsed.kind.value != value["kind"]:
        raise ValueError(f'must be {{"kind": "{parsed.kind.value}", "value": ...}} for that value')
    return parsed
