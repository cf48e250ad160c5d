"""Real, playable H.264 MP4s for the emulators, rendered with PyAV.

Each (width, height, duration) shape is rendered once and cached, so an emulator
serving thousands of jobs renders a handful of files. The picture is a moving
gradient with a sweeping bar: cheap to encode, and obviously moving when played.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from functools import lru_cache

import av
import numpy as np

#: frames per second of emulator output; low, because the content is synthetic
FPS = 12


_locks: dict[tuple[int, int, int], threading.Lock] = {}
_locks_guard = threading.Lock()


def render_mp4(width: int, height: int, duration_s: float) -> bytes:
    """The MP4 bytes for one shape (rendered on first use, then cached); the length is
    rounded to whole frames (an edit keeps its source's, which need not be whole seconds)."""
    frames = max(1, round(duration_s * FPS))
    key = (width, height, frames)
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # two jobs of a new shape must not both pay for the render
        return _render_cached(width, height, frames)


@lru_cache(maxsize=64)
def _render_cached(width: int, height: int, frames: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "30"}
        for frame in _frames(width, height, frames):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _frames(width: int, height: int, count: int) -> Iterator[av.VideoFrame]:
    # Build planes in yuv420p directly: no per-frame colour conversion.
    xs = np.arange(width, dtype=np.uint16)
    ys = np.arange(height, dtype=np.uint16)[:, None]
    cw, ch = width // 2, height // 2
    for i in range(count):
        t = i / max(count - 1, 1)
        luma = ((xs[None, :] + ys + int(t * 255 * 4)) % 256).astype(np.uint8)
        bar = int(t * (width - width // 10))
        luma[:, bar : bar + width // 10] = 235
        u = np.full((ch, cw), int(64 + 128 * t), dtype=np.uint8)
        v = np.full((ch, cw), int(192 - 128 * t), dtype=np.uint8)
        planes = np.concatenate([luma, u.reshape(-1, width), v.reshape(-1, width)])
        yield av.VideoFrame.from_ndarray(planes, format="yuv420p")


def probe(data: bytes) -> dict[str, float | int | str]:
    """Codec, size, duration and frame count of an MP4 (tests and the CLI use it)."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else frames / FPS
        return {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": frames,
            "duration_s": duration,
            "format": container.format.name,
        }
