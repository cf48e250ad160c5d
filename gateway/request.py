"""The provider-neutral request: what an app asks for, validated before any vendor is called.

``VideoRequest(...)`` raises :class:`~gateway.errors.InvalidRequest` naming the first bad
field and the reason, never a pydantic traceback, so every entry point (library, CLI,
HTTP) reports bad input the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from gateway import request_limits as limits
from gateway.errors import InvalidRequest

# re-exported: adapters and plugins import the image names from here
from gateway.images import MAX_DATA_URI_CHARS as MAX_DATA_URI_CHARS
from gateway.images import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES
from gateway.images import NO_LOCAL_FILES as NO_LOCAL_FILES
from gateway.images import ImageInput as ImageInput
from gateway.images import ImageKind as ImageKind
from gateway.images import sniff_image_type as sniff_image_type
from gateway.media import from_caller
from gateway.operations import Operation, OperationSpec, VideoKind, remote_only_spec

MAX_PROMPT_CHARS = 4000


class ModelFamily(StrEnum):
    """Neutral model families; each provider maps them to its own endpoint or id."""

    RAY_2_FLASH = "ray-2-flash"
    RAY_2 = "ray-2"


class AspectRatio(StrEnum):
    R16_9 = "16:9"
    R9_16 = "9:16"
    R1_1 = "1:1"
    R4_3 = "4:3"
    R3_4 = "3:4"
    R21_9 = "21:9"
    R9_21 = "9:21"

    @property
    def ratio(self) -> tuple[int, int]:
        w, h = self.value.split(":")
        return int(w), int(h)


class Resolution(StrEnum):
    P540 = "540p"
    P720 = "720p"
    P1080 = "1080p"

    @property
    def lines(self) -> int:
        return int(self.value[:-1])


class Concept(StrEnum):
    """Luma's camera-motion concepts (the model family's vocabulary, not a vendor's)."""

    TRUCK_LEFT = "truck_left"
    TRUCK_RIGHT = "truck_right"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PEDESTAL_UP = "pedestal_up"
    PEDESTAL_DOWN = "pedestal_down"
    TILT_UP = "tilt_up"
    TILT_DOWN = "tilt_down"
    ROLL_LEFT = "roll_left"
    ROLL_RIGHT = "roll_right"
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    PUSH_IN = "push_in"
    PULL_OUT = "pull_out"
    DOLLY_ZOOM = "dolly_zoom"
    ORBIT_LEFT = "orbit_left"
    ORBIT_RIGHT = "orbit_right"
    CRANE_UP = "crane_up"
    CRANE_DOWN = "crane_down"
    AERIAL = "aerial"
    AERIAL_DRONE = "aerial_drone"
    LOW_ANGLE = "low_angle"
    HIGH_ANGLE = "high_angle"
    EYE_LEVEL = "eye_level"
    GROUND_LEVEL = "ground_level"
    OVER_THE_SHOULDER = "over_the_shoulder"
    POV = "pov"
    SELFIE = "selfie"
    HANDHELD = "handheld"
    STATIC = "static"
    BOLT_CAM = "bolt_cam"
    OVERHEAD = "overhead"
    ELEVATOR_DOORS = "elevator_doors"
    TINY_PLANET = "tiny_planet"


class RoutePolicy(StrEnum):
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    PRIORITY = "priority"
    WEIGHTED = "weighted"


class Degradation(StrEnum):
    """Changes a caller may explicitly allow; the job records which were applied."""

    HIGHER_RESOLUTION = "higher_resolution"


ImageField = Annotated[ImageInput | None, Field(default=None)]


class VideoRequest(BaseModel):
    """One video to generate, in neutral terms, plus routing hints.

    ``resolution=None`` means "no preference": each provider uses its own default and
    the job records what was produced. An explicit resolution is honoured exactly
    unless ``allow`` contains ``higher_resolution``.
    """

    # allow_inf_nan=False: a non-finite number is a 400 naming the field, never a job the
    # store cannot write (its JSON refuses NaN and infinities)
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False, allow_inf_nan=False)

    #: required to generate or extend; optional for modify and reframe (the source leads)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    model: ModelFamily = ModelFamily.RAY_2_FLASH
    start_image: ImageField
    end_image: ImageField
    aspect_ratio: AspectRatio = AspectRatio.R16_9
    resolution: Resolution | None = None
    duration_s: Literal[5, 9] = 5
    # strict: pydantic's lax mode read "yes", "on", "1" and 1 as true, so a typo or a client
    # not sending JSON booleans changed the job unseen (a loop, no fallback); now a 400
    loop: StrictBool = False
    concepts: tuple[Concept, ...] = ()
    allow: frozenset[Degradation] = frozenset()
    # routing hints
    route: RoutePolicy | None = None
    providers: tuple[str, ...] | None = None
    max_cost_usd: float | None = Field(default=None, gt=0)
    deadline_s: float | None = Field(default=None, gt=0, le=limits.MAX_DEADLINE_S)
    fallback: StrictBool = True
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_CHARS)
    webhook_url: str | None = Field(default=None, max_length=limits.MAX_URL_CHARS)
    metadata: dict[str, str] = Field(default_factory=dict)
    #: what to do to a source video (modify, reframe, extend); None is plain generation
    edit: OperationSpec | None = None

    def __init__(self, **data: Any) -> None:
        limits.check_strings(data)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None

    @classmethod
    def parse(cls, data: dict[str, Any], *, local_files: bool = True, checked: bool = False) -> VideoRequest:
        """The request from JSON-like data. ``local_files=False`` is how the HTTP service
        parses a caller's request: an image may not name a file on the server, in any form
        (a plain path or ``{"kind": "path", ...}``), and no file is looked at. ``checked``:
        the caller ran ``check_strings`` on everything ``data`` was made of (an API's body)."""
        if local_files:
            return cls(**data)
        if not checked:
            limits.check_strings(data)  # before any value is looked at
        if data.get("start_image") is not None or data.get("end_image") is not None:  # most requests: neither
            data = {**data, **_remote_images(data)}
        if data.get("edit") is not None:
            try:
                data = {**data, "edit": remote_only_spec(data["edit"])}
            except ValueError as exc:
                raise InvalidRequest("edit.source", str(exc)) from None
        # what was added above is made of checked text: validated without __init__'s second walk
        request = cls.__new__(cls)
        try:
            BaseModel.__init__(request, **data)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None
        return request

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if v and not v.strip():  # "" is "no prompt", judged with the operation (_frames)
            raise ValueError("must not be empty")
        return v

    @field_validator("start_image", "end_image", mode="before")
    @classmethod
    def _parse_image(cls, v: Any) -> Any:
        if v is None or isinstance(v, (ImageInput, dict)):
            return v
        return ImageInput.parse(v)

    @field_validator("concepts", mode="before")
    @classmethod
    def _concepts_count(cls, v: Any) -> Any:
        limits.check_count(v, limits.MAX_CONCEPTS)
        return v

    @field_validator("allow", mode="before")
    @classmethod
    def _allow_count(cls, v: Any) -> Any:
        limits.check_count(v, limits.MAX_ALLOW)
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str]) -> dict[str, str]:
        limits.check_metadata(v)
        return v

    @field_validator("idempotency_key")
    @classmethod
    def _idempotency_key(cls, v: str | None) -> str | None:
        if v is not None:
            limits.check_idempotency_key(v)
        return v

    @field_validator("max_cost_usd", "deadline_s", mode="before")
    @classmethod
    def _no_boolean_amount(cls, v: Any) -> Any:
        # pydantic's lax mode reads true as 1: max_cost_usd true was a $1 cap, deadline_s true 1 s
        if isinstance(v, bool):
            raise ValueError(f"{str(v).lower()} is not a number")
        return v

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        # "5s" is how two vendors spell it; accept it, reject anything but 5 or 9.
        if isinstance(v, bool):  # JSON true is no length (it said "True seconds is not offered")
            raise ValueError(f"{str(v).lower()} is not a number of seconds; choose 5 or 9")
        if isinstance(v, str) and v.strip().rstrip("s").isdigit():
            v = int(v.strip().rstrip("s"))
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if v not in (5, 9):
            raise ValueError(f"{v!r} seconds is not offered; choose 5 or 9")
        return v

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, str):
            v = [v]
        limits.check_count(v, limits.MAX_PROVIDERS)
        names = tuple(str(n).strip() for n in v)
        if not names or any(not n for n in names):
            raise ValueError("must list at least one provider name")
        if any(len(n) > limits.MAX_PROVIDER_NAME_CHARS for n in names):
            raise ValueError(f"a provider name is longer than {limits.MAX_PROVIDER_NAME_CHARS} characters")
        return names

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return v

    @field_serializer("allow", when_used="json")
    def _allow_in_order(self, allow: frozenset[Degradation]) -> list[str]:
        # a frozenset dumps in hash order; sorted, equal requests give equal documents (a
        # fingerprint, or the JSON a store writes, is the same however the caller spelled it)
        return sorted(map(str, allow)) if allow else []

    @model_validator(mode="after")
    def _frames(self) -> VideoRequest:
        if self.end_image is not None and self.start_image is None and self.loop:
            # Luma blends the end into the start for a loop; an end frame alone cannot loop.
            raise ValueError("loop cannot be combined with an end_image and no start_image")
        if not self.prompt and self.operation is Operation.GENERATE:
            # not a ValueError: pydantic would name no field; this one names it. An operation on a
            # source video may omit it (modify, reframe; extend decides per segment)
            raise InvalidRequest("prompt", "must not be empty (only an operation on a source video may omit it)")
        return self

    @property
    def operation(self) -> Operation:
        return Operation(self.edit.operation) if self.edit is not None else Operation.GENERATE

    @property
    def is_image_to_video(self) -> bool:
        return self.start_image is not None or self.end_image is not None

    def document_json(self) -> str | None:
        """The request as the stores write it (``codec.dumps(codec.encode_request(self))``'s
        text) in one pydantic dump, not a dump to dicts and an encode of those (~25 k
        instructions of a create; docs/benchmarks.md 6.pydreq). None when pydantic-core
        refuses a string (a lone surrogate, which parsing refuses first): the codec writes it."""
        try:
            return self.model_dump_json()
        except ValueError:  # PydanticSerializationError
            return None

    def public_dict(self) -> dict[str, Any]:
        """The request as JSON-safe data, with inlined images summarised (for job records)."""
        data = self.model_dump(mode="json")
        for key in ("start_image", "end_image"):
            image = getattr(self, key)
            if image is not None:
                data[key] = image.describe() if image.kind is ImageKind.DATA_URI else image.value
        if self.edit is not None and self.edit.source is not None and self.edit.source.kind is VideoKind.DATA_URI:
            data["edit"]["source"] = self.edit.source.describe()
        return data


def _remote_images(data: dict[str, Any]) -> dict[str, ImageInput]:
    """The image fields parsed as URLs or data URIs only, before the model sees them."""
    parsed = {}
    for name in ("start_image", "end_image"):
        if data.get(name) is None:
            continue
        try:
            parsed[name] = from_caller(data[name], lambda v: ImageInput.parse(v, local_files=False), NO_LOCAL_FILES)
        except ValueError as exc:
            raise InvalidRequest(name, str(exc)) from None
    return parsed


def invalid_request_from(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error as an ``InvalidRequest`` naming the field and the reason."""
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err.get("loc", ()))[:80] or "request"
    kind = err.get("type", "")
    given = limits.shown(err.get("input"))
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        reason = f"{given} is not one of {expected}"
    elif kind == "extra_forbidden":
        reason = "is not a known field"
    elif kind == "bool_type":
        reason = f"must be true or false, not {given}"
    elif kind == "literal_error":
        reason = f"{given} is not allowed; expected {err.get('ctx', {}).get('expected', '')}"
    else:
        reason = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    if field.startswith("concepts."):
        field = "concepts"
    return InvalidRequest(field, reason)
