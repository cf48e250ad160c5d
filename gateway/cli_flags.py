"""Which flag of a command fills which request field, so a CLI error names what the user typed.

The request model, the router and the sequence planner name a bad value by its JSON field
(``edit.extend.target_seconds``, ``max_cost_usd``): right for HTTP and library callers, who
wrote those names, and left as it is for them. A person at a terminal typed ``--duration``
or ``--max-cost``. Each command has one table, field -> flag, and passes its errors through
:func:`as_flags` before printing them; a field the table does not know is printed as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.errors import InvalidRequest, ReelgateError

#: request field (a JSON path, ``edit.`` without its operation tag) -> the flag that fills it
Flags = Mapping[str, str]

_ROUTING: Flags = {"model": "--model", "providers": "--provider", "route": "--route",
                   "max_cost_usd": "--max-cost", "deadline_s": "--deadline"}

#: ``reelgate generate`` and ``reelgate quote`` (a ``--duration`` past one clip is a chain's length)
GENERATE: Flags = {
    **_ROUTING, "prompt": "PROMPT", "start_image": "--image", "end_image": "--end-image",
    "aspect_ratio": "--aspect-ratio", "resolution": "--resolution", "duration_s": "--duration",
    "edit.target_seconds": "--duration", "loop": "--loop", "concepts": "--concept", "allow": "--allow",
}
#: ``reelgate modify`` and ``reelgate reframe``
EDIT: Flags = {**_ROUTING, "prompt": "--prompt", "start_image": "--image", "aspect_ratio": "--aspect-ratio",
               "edit.source": "SOURCE", "edit.mode": "--mode"}
#: ``reelgate extend``
EXTEND: Flags = {**_ROUTING, "prompt": "--prompt", "edit.prompts": "--prompt", "aspect_ratio": "--aspect-ratio",
                 "resolution": "--resolution", "edit.source": "SOURCE", "edit.target_seconds": "--seconds"}
#: ``reelgate keys create|revoke`` (gateway.keys names its inputs as the admin API does)
KEYS: Flags = {"name": "--name", "budget": "--budget", "key": "KEY"}


def quote_flags(source_flag: str | None) -> Flags:
    """``reelgate quote``'s table: ``generate``'s, with the source of ``--modify``/``--reframe``/
    ``--extend`` under that flag (``SOURCE`` in the commands that run them), and ``--extend``'s
    length under ``--seconds``."""
    if source_flag is None:
        return GENERATE
    flags = {**GENERATE, "edit.source": source_flag, "SOURCE": source_flag, "edit.mode": "--mode"}
    if source_flag == "--extend":
        flags["edit.target_seconds"] = "--seconds"
    return flags


#: a field name as the model writes it in prose (``end_image``): never an ordinary word
_FIELD_WORD = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def as_flags(exc: ReelgateError, flags: Flags) -> ReelgateError:
    """``exc`` naming the flag the user typed instead of the request field it fills; any other
    error, or a field no flag fills, unchanged. The reason is kept: it says what is wrong and
    what is allowed, in the same words the HTTP API uses."""
    if not isinstance(exc, InvalidRequest):
        return exc
    flag = _flag_of(exc.field, flags)
    if flag is not None:
        return InvalidRequest(flag, exc.reason)
    first, _, rest = exc.reason.partition(" ")
    if exc.field == "request" and first in flags:
        # a rule across fields (a model validator) has no field of its own; its reason names
        # them, its subject first: "loop cannot be combined with an end_image and no start_image"
        return InvalidRequest(flags[first], _FIELD_WORD.sub(lambda m: flags.get(m[0], m[0]), rest))
    return exc


def _flag_of(field: str, flags: Flags) -> str | None:
    """The flag for ``field`` or for the nearest field holding it (``allow.0`` is ``--allow``)."""
    from gateway.operations import Operation

    parts = field.split(".")
    if len(parts) > 2 and parts[0] == "edit" and parts[1] in {o.value for o in Operation}:
        # pydantic puts the union's tag in the path (edit.extend.target_seconds); the JSON has none
        del parts[1]
    for end in range(len(parts), 0, -1):
        flag = flags.get(".".join(parts[:end]))
        if flag is not None:
            return flag
    return None
