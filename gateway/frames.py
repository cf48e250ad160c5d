"""The picture size each neutral (aspect ratio, resolution) pair stands for.

One definition for everyone who needs pixels: OpenAI-shaped APIs name a video by its
``size`` ("1280x720"), and the emulators render frames of exactly that size.
"""

from __future__ import annotations

from gateway.request import AspectRatio, Resolution


def frame_size(aspect_ratio: AspectRatio, resolution: Resolution) -> tuple[int, int]:
    """(width, height) with the short side equal to the resolution's lines, both even."""
    w, h = aspect_ratio.ratio
    short = resolution.lines
    if w >= h:
        return _even(short * w / h), short
    return short, _even(short * h / w)


def video_size(aspect_ratio: AspectRatio, resolution: Resolution) -> str:
    """OpenAI's ``size`` ("WxH"): 16:9 at 720p is "1280x720"."""
    width, height = frame_size(aspect_ratio, resolution)
    return f"{width}x{height}"


def _even(x: float) -> int:
    return int(round(x / 2)) * 2
