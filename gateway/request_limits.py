"""The bounds of a ``VideoRequest``: what any caller, trusted or not, may put in one.

Every field has a cap, so one request can cost only bounded memory, storage and log
space. Strings must be storable and printable everywhere a job goes: PostgreSQL refuses
NUL, and a lone UTF-16 surrogate (``"\\ud83d"`` in JSON) cannot be encoded as UTF-8, so
a job holding one could be neither stored nor answered. Both are refused before
anything is planned, reserved or stored, naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
#: the whole of ``metadata`` as compact UTF-8 JSON
MAX_METADATA_BYTES = 8 * 1024
MAX_PROVIDERS = 16
MAX_PROVIDER_NAME_CHARS = 64
MAX_CONCEPTS = 8
MAX_ALLOW = 8
MAX_URL_CHARS = 2048
MAX_IDEMPOTENCY_KEY_CHARS = 255
#: a job that may take longer than a week is a mistake, not a deadline
MAX_DEADLINE_S = 7 * 24 * 3600.0

#: printable ASCII without spaces: safe in a header, a log line and a database index
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_strings(data: Mapping[str, Any]) -> None:
    """Raise ``InvalidRequest`` naming the first field whose text (at any depth, keys
    included) holds a NUL byte or a lone surrogate."""
    for name, value in data.items():
        if value.__class__ is str and value.isascii() and name.isascii() and "\x00" not in value \
                and "\x00" not in name:
            continue  # ASCII without NUL (the usual field): nothing to refuse, no call per string
        problem = _text_problem(name) or _first_problem(value)
        if problem is not None:  # the name made printable only then: each create checks every field
            raise InvalidRequest(_printable(str(name)), problem)


def _first_problem(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return _text_problem(value)
    if depth > 8:  # deeper values are refused by the model's types anyway
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            problem = _text_problem(key) if isinstance(key, str) else None
            if problem is not None:
                return f"a key {problem}"
            problem = _first_problem(item, depth + 1)
            if problem is not None:
                return problem
    elif isinstance(value, (list, tuple)):
        for item in value:
            problem = _first_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


def _text_problem(text: str) -> str | None:
    at = text.find("\x00")
    if at >= 0:
        return f"contains a NUL character (at {at}), which cannot be stored"
    found = None if text.isascii() else _SURROGATE.search(text)  # isascii() is O(1) in CPython
    if found is not None:
        return (f"contains a lone surrogate U+{ord(found.group()):04X} (at {found.start()}), which is not valid "
                "Unicode text; send the whole character")
    return None


def shown(value: Any, limit: int = 60) -> str:
    """A caller's value as an error message may quote it: its repr, cut short (it may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(name: str) -> str:
    """A field name safe to echo back (it may be what the caller got wrong)."""
    return name.encode("ascii", "backslashreplace").decode()[:80]


def check_metadata(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"key {key[:20]!r} must have 1 to {MAX_METADATA_KEY_CHARS} characters")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"the value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters")
    size = len(json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")


def check_count(value: Any, limit: int) -> None:
    """A list field's raw length, checked before its items are parsed one by one."""
    if isinstance(value, (list, tuple, set, frozenset)) and len(value) > limit:
        raise ValueError(f"has {len(value)} items; at most {limit} are allowed")


def check_idempotency_key(key: str) -> None:
    if _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise ValueError("may hold only printable ASCII characters, without spaces")
