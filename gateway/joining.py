"""The video work of a sequence, with PyAV: probe a clip, take its last frame, join clips.

Loaded only by the sequence driver, inside the functions that need it (never by an adapter
or ``gateway.server`` at import: tests/unit/test_layering.py), and always called in a thread:
decoding and encoding hold the CPU for a while.

Joining copies the clips' packets into one MP4 (a remux: no quality lost, no time spent)
when every clip has the same codec, picture size, pixel format and decoder setup; anything
else (a source in another codec, a fallback vendor encoding another size) is re-encoded to
the first clip's size as H.264.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container

#: the picture settings a re-encoded join uses (quality first: it is the delivered video)
REENCODE_OPTIONS = {"preset": "veryfast", "crf": "20"}
#: frames per second of a re-encoded join when the first clip does not say
DEFAULT_RATE = 24


@dataclass(frozen=True)
class ClipInfo:
    duration_s: float
    width: int
    height: int
    codec: str
    pix_fmt: str | None
    #: the decoder setup (H.264's SPS/PPS): clips remux together only when it is equal
    extradata: bytes | None
    time_base: Fraction | None = None

    def joins_with(self, other: ClipInfo) -> bool:
        return (self.codec, self.width, self.height, self.pix_fmt, self.extradata, self.time_base) == (
            other.codec, other.width, other.height, other.pix_fmt, other.extradata, other.time_base)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise ValueError(f"{path.name} is not a video PyAV can read ({exc})") from None


def probe(path: Path) -> ClipInfo:
    """What a clip is; ValueError when it is not a video."""
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = 0.0
        return ClipInfo(round(duration, 3), ctx.width, ctx.height, ctx.name,
                        ctx.pix_fmt, bytes(ctx.extradata) if ctx.extradata else None, stream.time_base)


def last_frame_png(path: Path) -> bytes:
    """The clip's last picture as a PNG: the start frame of the next clip."""
    last = None
    with _open(path) as container:
        stream = container.streams.video[0]
        if container.duration is not None and stream.time_base is not None:
            # decode only the tail: seek to the keyframe before the last two seconds
            tail_s = max(container.duration / av.time_base - 2.0, 0.0)
            container.seek(int(tail_s / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            last = frame
    if last is None:
        raise ValueError(f"{path.name} has no picture to continue from")
    rgb = last.reformat(format="rgb24")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = rgb.width, rgb.height, "rgb24"
    encoder.time_base = Fraction(1, DEFAULT_RATE)
    return b"".join(bytes(p) for p in [*encoder.encode(rgb), *encoder.encode(None)])


def join(clips: list[Path], target: Path) -> tuple[ClipInfo, bool]:
    """Write ``clips`` one after the other into ``target`` (MP4). Returns what was written
    and whether it had to be re-encoded."""
    if not clips:
        raise ValueError("nothing to join")
    infos = [probe(c) for c in clips]
    remux = all(i.joins_with(infos[0]) for i in infos[1:])
    partial = target.with_name(target.name + ".part")
    (_remux if remux else _reencode)(clips, infos, partial)
    partial.replace(target)  # all or nothing: a killed join leaves no half file under the name
    return probe(target), not remux


def _remux(clips: list[Path], _infos: list[ClipInfo], target: Path) -> None:
    """Copy every packet, each clip shifted to start where the previous one ended (the
    clips share one time base: ``ClipInfo.joins_with``)."""
    shift = 0
    last_dts: int | None = None
    with av.open(str(target), "w", format="mp4") as out:
        with _open(clips[0]) as first:
            ost = out.add_stream_from_template(first.streams.video[0])
        for clip in clips:
            with _open(clip) as src:
                stream = src.streams.video[0]
                start: int | None = None
                end = shift
                for packet in src.demux(stream):
                    if packet.dts is None:  # the demuxer's empty flush packet
                        continue
                    pts = packet.pts if packet.pts is not None else packet.dts
                    if start is None:
                        start = min(packet.dts, pts)
                    pts, dts = pts - start + shift, packet.dts - start + shift
                    if last_dts is not None and dts <= last_dts:  # keep the muxer's timestamps rising
                        dts = last_dts + 1
                        pts = max(pts, dts)
                    end = max(end, pts + (packet.duration or 0))
                    packet.pts, packet.dts, packet.stream = pts, dts, ost
                    out.mux(packet)
                    last_dts = dts
                shift = end


def _reencode(clips: list[Path], infos: list[ClipInfo], target: Path) -> None:
    width, height = infos[0].width, infos[0].height
    with _open(clips[0]) as first:
        rate = first.streams.video[0].average_rate or DEFAULT_RATE
    offset_s = 0.0
    last_pts = -1
    with av.open(str(target), "w", format="mp4") as out:
        ost = out.add_stream("libx264", rate=rate)
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.options = dict(REENCODE_OPTIONS)
        for clip, info in zip(clips, infos, strict=True):
            with _open(clip) as src:
                for frame in src.decode(src.streams.video[0]):
                    pts = round((offset_s + (frame.time or 0.0)) * rate)
                    if pts <= last_pts:
                        continue
                    picture = frame.reformat(width=width, height=height, format="yuv420p")
                    picture.pts, picture.time_base, last_pts = pts, Fraction(1) / rate, pts
                    for packet in ost.encode(picture):
                        out.mux(packet)
            offset_s += info.duration_s
        for packet in ost.encode(None):
            out.mux(packet)
