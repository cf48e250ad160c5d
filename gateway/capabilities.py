"""What a provider can do, as data, and matching a request against it.

Providers declare one :class:`Capabilities` per neutral model family they serve. The
core (never the adapter) decides eligibility, so every provider is judged by the same
rules and the reasons read the same way: "aspect_ratio 1:1 is not offered by fal".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.operations import Operation, VideoKind
from gateway.request import (
    AspectRatio,
    Concept,
    Degradation,
    ImageKind,
    ModelFamily,
    Resolution,
    VideoRequest,
)


@dataclass(frozen=True)
class Capabilities:
    """One model family at one provider. Every field is required: a new adapter must decide."""

    model: ModelFamily
    aspect_ratios: frozenset[AspectRatio]
    resolutions: frozenset[Resolution]
    #: what the provider produces when the caller states no resolution
    default_resolution: Resolution
    #: False when the vendor has no resolution field (it always makes ``default_resolution``)
    resolution_selectable: bool
    durations: frozenset[int]
    start_image: bool
    end_image: bool
    loop: bool
    concepts: frozenset[Concept]
    #: how image inputs may be sent; a local file needs DATA_URI (we inline it)
    image_kinds: frozenset[ImageKind]
    max_prompt_chars: int
    #: where these facts come from (vendor doc URL or note), shown in docs/providers.md
    source: str = ""
    #: what it can do beyond generating (modify, reframe, extend); generation only unless declared
    operations: frozenset[Operation] = frozenset({Operation.GENERATE})
    #: the target aspect ratios of a reframe when they differ from generation's (fal: + 1:1)
    reframe_aspect_ratios: frozenset[AspectRatio] | None = None


# not frozen (a value made and read inside ``Provider.quote``): a frozen dataclass sets each
# field through ``object.__setattr__``, a third of a ``match`` (every provider, every plan)
@dataclass(slots=True)
class Match:
    """The outcome of matching one request against one provider's capabilities."""

    provider: str
    reasons: tuple[str, ...] = ()
    #: the resolution this provider will actually produce
    resolution: Resolution | None = None
    #: degradations applied (each one explicitly allowed by the caller)
    degradations: tuple[str, ...] = ()
    capabilities: Capabilities | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return not self.reasons


def match(provider: str, caps_by_model: dict[ModelFamily, Capabilities], request: VideoRequest) -> Match:
    """Can ``provider`` honour every field of ``request``? If not, say why for each field."""
    caps = caps_by_model.get(request.model)
    if caps is None:
        return Match(provider, (f"model {request.model} is not offered by {provider}",))
    operation = request.operation  # a property that builds the enum: read once
    if operation not in caps.operations:
        reason = f"{provider} cannot {operation.value} (model {request.model})"
        return Match(provider, (reason,), capabilities=caps)
    if operation in (Operation.MODIFY, Operation.REFRAME):
        return _match_edit(provider, caps, request)
    reasons: list[str] = []
    degradations: list[str] = []

    def no(what: str) -> None:
        reasons.append(f"{what} is not offered by {provider}")

    if request.aspect_ratio not in caps.aspect_ratios:
        no(f"aspect_ratio {request.aspect_ratio}")
    if request.duration_s not in caps.durations:
        no(f"duration_s {request.duration_s}")
    resolution = _resolution(request, caps, provider, reasons, degradations)
    if request.loop and not caps.loop:
        no("loop")
    for name, image in (("start_image", request.start_image), ("end_image", request.end_image)):
        if image is None:
            continue
        if not getattr(caps, name):
            no(name)
            continue
        needed = ImageKind.DATA_URI if image.kind in (ImageKind.PATH, ImageKind.DATA_URI) else ImageKind.URL
        if needed not in caps.image_kinds:
            kind = "a local file" if image.kind is ImageKind.PATH else "a data URI"
            reasons.append(f"{name} as {kind} is not accepted by {provider} (give an http(s) URL)")
    missing = [c for c in request.concepts if c not in caps.concepts]
    if missing:
        no("concepts " + ", ".join(c.value for c in missing))
    if len(request.prompt) > caps.max_prompt_chars:
        reasons.append(f"prompt longer than {caps.max_prompt_chars} characters is not accepted by {provider}")
    return Match(provider, tuple(reasons), resolution, tuple(degradations), caps)


def _resolution(
    request: VideoRequest,
    caps: Capabilities,
    provider: str,
    reasons: list[str],
    degradations: list[str],
) -> Resolution | None:
    wanted = request.resolution
    if wanted is None:
        return caps.default_resolution
    if wanted in caps.resolutions:
        return wanted
    higher = sorted((r for r in caps.resolutions if r.lines > wanted.lines), key=lambda r: r.lines)
    if higher and Degradation.HIGHER_RESOLUTION in request.allow:
        degradations.append(f"resolution {wanted} -> {higher[0]} (higher_resolution allowed)")
        return higher[0]
    hint = f" (it makes {', '.join(sorted(r.value for r in caps.resolutions))})"
    if higher:
        hint += "; allow higher_resolution to accept it"
    reasons.append(f"resolution {wanted} is not offered by {provider}{hint}")
    return None


def _match_edit(provider: str, caps: Capabilities, request: VideoRequest) -> Match:
    """Modify and reframe keep the source's length and picture: the generation fields that
    would change those (resolution, loop, end frame, concepts) are refused, never ignored."""
    op = request.operation.value
    reasons: list[str] = []
    if request.operation is Operation.REFRAME:
        targets = caps.reframe_aspect_ratios or caps.aspect_ratios
        if request.aspect_ratio not in targets:
            reasons.append(f"reframe to aspect_ratio {request.aspect_ratio} is not offered by {provider}")
    for name, given in (("resolution", request.resolution is not None), ("loop", request.loop),
                        ("end_image", request.end_image is not None), ("concepts", bool(request.concepts))):
        if given:
            reasons.append(f"{name} cannot be set for {op} at {provider} (the output follows the source video)")
    image = request.start_image
    if image is not None and image.kind in (ImageKind.PATH, ImageKind.DATA_URI) \
            and ImageKind.DATA_URI not in caps.image_kinds:
        reasons.append(f"start_image as a local file or data URI is not accepted by {provider} (give a URL)")
    assert request.edit is not None and request.edit.source is not None  # modify and reframe need one
    if request.edit.source.kind in (VideoKind.PATH, VideoKind.DATA_URI) and ImageKind.DATA_URI not in caps.image_kinds:
        reasons.append(f"edit.source as a local file or data URI is not accepted by {provider} (give a URL)")
    if len(request.prompt) > caps.max_prompt_chars:
        reasons.append(f"prompt longer than {caps.max_prompt_chars} characters is not accepted by {provider}")
    return Match(provider, tuple(reasons), caps.default_resolution, (), caps)
