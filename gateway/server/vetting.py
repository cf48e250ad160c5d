"""What a caller's request must pass before the service takes it: no server files, only
public addresses (fetched once, size-capped, sniffed), and the providers its key allows.
Every failure is a 400 naming the field, before anything is reserved or paid."""

from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.operations import MAX_VIDEO_BYTES, NO_LOCAL_VIDEO_FILES, VideoKind, sniff_video_type
from gateway.request import NO_LOCAL_FILES, ImageKind, VideoRequest
from gateway.safe_fetch import SafeFetcher


def refuse_local_files(request: VideoRequest) -> None:
    """No image of a caller's request is a file on this server, whatever form it came in
    (the routes parse with ``local_files=False``; this holds for any other way in). One
    message for every path, so the answer never tells which files exist."""
    for name in ("start_image", "end_image"):
        image = getattr(request, name)
        if image is not None and image.kind is ImageKind.PATH:
            raise InvalidRequest(name, NO_LOCAL_FILES)
    source = request.edit.source if request.edit is not None else None
    if source is not None and source.kind is VideoKind.PATH:
        raise InvalidRequest("edit.source", NO_LOCAL_VIDEO_FILES)


def restrict(request: VideoRequest, allowed: tuple[str, ...]) -> VideoRequest:
    """``request`` limited to the providers a caller's key may use (400 when none is left)."""
    wanted = request.providers or allowed
    kept = tuple(p for p in wanted if p in allowed)
    if not kept:
        raise InvalidRequest("providers", f"this API key may only use {', '.join(allowed)}")
    return request.model_copy(update={"providers": kept})


async def check_urls(request: VideoRequest, *, allow_private: bool, max_upload_bytes: int) -> None:
    """Fetch image URLs once, from public addresses only and within the size limit, so a
    bad frame is a 400 naming the field rather than a vendor failure; check the webhook
    URL's addresses the same way. The service is never a way into its own network."""
    urls = {name: image.value for name in ("start_image", "end_image")
            if (image := getattr(request, name)) is not None and image.kind is ImageKind.URL}
    source = request.edit.source if request.edit is not None else None
    if source is not None and source.kind is VideoKind.URL:
        # a source video: the same rules as an image (public address, size cap, sniffed type)
        async with SafeFetcher(allow_private=allow_private, max_bytes=MAX_VIDEO_BYTES) as videos:
            await videos.fetch(source.value, field="edit.source", sniff=sniff_video_type,
                               what="an MP4, MOV or WebM video")
    if not urls and not request.webhook_url:
        return
    async with SafeFetcher(allow_private=allow_private, max_bytes=max_upload_bytes) as fetcher:
        for name, url in urls.items():
            await fetcher.fetch(url, field=name)
        if source is not None and source.kind is VideoKind.URL:  # fetched by the job, from public addresses
            await fetcher.check_public(source.value, field="edit.source")
        if request.webhook_url:  # we will POST there: it must not reach into our network
            await fetcher.check_public(request.webhook_url, field="webhook_url")
