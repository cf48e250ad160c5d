"""gateway.cli_flags: an error about a request field, as the CLI prints it, names the flag
that filled the field; the HTTP API's names stay as they are."""

from __future__ import annotations

import pytest

from gateway.cli_flags import EDIT, EXTEND, GENERATE, KEYS, as_flags, quote_flags
from gateway.errors import InvalidRequest, Unsupported
from gateway.request import VideoRequest


def refusal(**fields: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        VideoRequest(**fields)
    return caught.value


def test_a_chain_too_long_names_duration_and_keeps_the_reason():
    exc = refusal(prompt="x", edit={"operation": "extend", "target_seconds": 40})
    assert exc.field == "edit.extend.target_seconds"  # what the HTTP API says, unchanged
    shown = as_flags(exc, GENERATE)
    assert isinstance(shown, InvalidRequest)
    assert shown.message == "--duration: Input should be less than or equal to 30"
    assert shown.to_dict()["field"] == "--duration" and "target_seconds" not in str(shown.to_dict())


@pytest.mark.parametrize(("fields", "flags", "flag"), [
    ({"prompt": "x", "edit": {"operation": "extend", "target_seconds": 40, "source": "https://a.example/v.mp4"}},
     EXTEND, "--seconds"),
    ({"prompt": "x", "allow": ["faster"]}, GENERATE, "--allow"),  # pydantic's path is allow.0
    ({"prompt": "x", "max_cost_usd": -1}, GENERATE, "--max-cost"),
    ({"prompt": "x", "deadline_s": 0}, EDIT, "--deadline"),
    ({"prompt": "x", "start_image": "/no/such.png"}, EDIT, "--image"),
    ({"prompt": "x", "concepts": ["moonwalk"]}, GENERATE, "--concept"),
    ({"prompt": "", "edit": {"operation": "modify", "source": "https://a.example/v.mp4", "mode": "x"}},
     EDIT, "--mode"),
    ({"prompt": "x", "edit": {"operation": "extend", "target_seconds": 12, "prompts": [""],
                              "source": "https://a.example/v.mp4"}}, EXTEND, "--prompt"),
])
def test_every_mapped_field_names_its_flag(fields, flags, flag):
    exc = refusal(**fields)
    shown = as_flags(exc, flags)
    assert isinstance(shown, InvalidRequest) and shown.field == flag and shown.reason == exc.reason


def test_a_rule_across_fields_names_its_subject_flag_and_the_others_in_the_reason():
    exc = refusal(prompt="x", loop=True, end_image="https://a.example/end.png")
    assert exc.field == "request"
    shown = as_flags(exc, GENERATE)
    assert shown.message == "--loop: cannot be combined with an --end-image and no --image"


def test_quote_names_the_source_and_length_by_its_own_flags():
    extend = quote_flags("--extend")
    assert as_flags(InvalidRequest("SOURCE", "file 'a.mp4' does not exist"), extend).message == (
        "--extend: file 'a.mp4' does not exist")
    assert as_flags(InvalidRequest("edit.target_seconds", "too short"), extend).message == "--seconds: too short"
    assert as_flags(InvalidRequest("edit.modify.source", "gone"), quote_flags("--modify")).message == "--modify: gone"
    assert quote_flags(None) is GENERATE


def test_what_no_flag_fills_is_left_as_it_is():
    unknown = InvalidRequest("metadata", "too many keys")
    assert as_flags(unknown, GENERATE) is unknown
    whole = InvalidRequest("request", "the vendor cannot take this image")  # no flag is its subject
    assert as_flags(whole, GENERATE) is whole
    other = Unsupported({"fal": ["aspect_ratio 1:1 is not offered by fal"]})
    assert as_flags(other, GENERATE) is other
    assert as_flags(InvalidRequest("budget", "must be more than 0"), KEYS).message == "--budget: must be more than 0"
