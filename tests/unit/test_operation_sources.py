"""Source videos given as job ids, the prompt rule per operation, and edit matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidRequest
from gateway.operations import SourceVideo, VideoKind
from gateway.request import VideoRequest

JOB = "vid_" + "0123456789abcdef" * 2
URL = "https://cdn.example.com/clip.mp4"


def test_a_job_id_is_a_job_source_in_the_library_and_the_service() -> None:
    assert SourceVideo.parse(JOB).kind is VideoKind.JOB
    req = VideoRequest.parse({"edit": {"operation": "modify", "source": JOB}}, local_files=False)
    assert req.edit is not None and req.edit.source == SourceVideo(kind=VideoKind.JOB, value=JOB)
    assert req.public_dict()["edit"]["source"] == {"kind": "job", "value": JOB}


def test_a_file_named_like_a_job_id_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / JOB).write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 32)
    assert SourceVideo.parse(JOB).kind is VideoKind.PATH
    # the service never looks at files: there it is the job id
    assert SourceVideo.parse(JOB, local_files=False).kind is VideoKind.JOB


def test_near_job_ids_are_not_job_ids() -> None:
    for text in ("vid_123", "vid_" + "G" * 32, "job_" + "0" * 32):
        with pytest.raises(ValueError, match="server file paths are not accepted"):
            SourceVideo.parse(text, local_files=False)


def test_operations_on_a_source_may_omit_the_prompt_generation_may_not() -> None:
    assert VideoRequest(edit={"operation": "modify", "source": URL}).prompt == ""
    assert VideoRequest(aspect_ratio="1:1", edit={"operation": "reframe", "source": URL}).prompt == ""
    with pytest.raises(InvalidRequest) as info:
        VideoRequest()
    assert info.value.field == "prompt" and "must not be empty" in info.value.reason
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="   ", edit={"operation": "modify", "source": URL})
    assert info.value.field == "prompt"


def test_a_url_source_is_not_inlined() -> None:
    with pytest.raises(ValueError, match="cannot be inlined"):
        SourceVideo.parse(URL).as_data_uri()
