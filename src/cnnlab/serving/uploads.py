"""From an HTTP request to decoded images, or a 4xx JSON error saying what to send instead.

The body is counted while it streams in: a declared ``Content-Length`` over the limit is refused
before a byte is read, and a body without one (chunked) is cut off the moment it passes the
limit (413), so no upload of any size is held. Starlette's multipart parser spools each file to a
temporary file past 1 MB. Images are decoded by ``data.decode.decode_image``, the decoder of
training and ``cnnlab predict``: the same allowed formats, PIL's decompression-bomb limit checked
from the header before any pixel is decoded, truncated files refused, EXIF orientation applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from cnnlab.data.decode import CENTER, Fit, UnreadableImage, decode_image
from cnnlab.serving.settings import ServeSettings

FIELD = "image"
HOW = f"send images as multipart/form-data in the field '{FIELD}', e.g. curl -F {FIELD}=@cat.jpg URL"
FIELD_BYTES = 64 * 1024  # a form field that is not a file (k=5, cam=1): small


@dataclass
class Upload:
    """One decoded image: the name the client gave it and uint8 (H, W, C) pixels at the model's size."""

    name: str
    pixels: np.ndarray


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.3g} MB"


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"the upload is over the {_mb(limit)} limit; send smaller images "
        "(or start the server with a larger --max-upload-mb)",
    )


def counting_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises 413 as soon as the body read so far passes ``limit`` bytes."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return counted


def check_headers(request: Request, settings: ServeSettings) -> None:
    """Refuses, before reading the body: a wrong content type (415), an empty or a declared-too-large body.

    Raises:
        HTTPException: 400, 413 or 415 with the reason.
    """
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"Content-Length '{declared}' is not a number of bytes")
    if declared == "0" or (declared is None and "transfer-encoding" not in request.headers):
        raise HTTPException(400, f"the request body is empty; {HOW}")
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise HTTPException(415, f"Content-Type '{content_type or 'none'}' is not accepted; {HOW}")
    if declared is not None and int(declared) > settings.max_upload_bytes:
        raise too_large(settings.max_upload_bytes)


async def read_form(request: Request, settings: ServeSettings) -> FormData:
    """The request's form, parsed while the body streams in under the upload limit.

    Raises:
        HTTPException: 400 (malformed, too many files), 413 (too large), 415 (not a form).
    """
    check_headers(request, settings)
    limited = Request(request.scope, counting_receive(request.receive, settings.max_upload_bytes))
    try:
        return await limited.form(
            max_files=settings.max_files, max_fields=settings.max_files + 16, max_part_size=FIELD_BYTES
        )
    except StarletteHTTPException as exc:  # the parser's own 400s (FastAPI's HTTPException subclasses it)
        if exc.status_code == 400 and "Too many files" in str(exc.detail):
            raise HTTPException(
                400,
                f"too many files in one request: at most {settings.max_files} "
                "(the server's --max-files); send the rest in another request",
            ) from None
        if exc.status_code == 400:
            raise HTTPException(400, f"the form could not be read ({exc.detail}); {HOW}") from None
        raise


def form_files(form: FormData) -> list[UploadFile]:
    """The uploads of the ``image`` field, in order.

    Raises:
        HTTPException: 422 when the field is missing or holds text rather than a file.
    """
    values = form.getlist(FIELD)
    if not values:
        others = ", ".join(sorted({str(k) for k in form})) or "no field"
        raise HTTPException(422, f"the form has no '{FIELD}' field (it has: {others}); {HOW}")
    texts = [v for v in values if not isinstance(v, UploadFile)]
    if texts:
        raise HTTPException(422, f"the '{FIELD}' field holds text, not a file; {HOW}")
    return [v for v in values if isinstance(v, UploadFile)]


def _decode_all(files: list[UploadFile], channels: int, side: int, fit: Fit) -> list[Upload]:
    decoded = []
    for number, upload in enumerate(files, 1):
        name = upload.filename or f"image {number}"
        try:
            decoded.append(Upload(name, decode_image(upload.file, channels, side, fit=fit)))
        except UnreadableImage as exc:
            raise HTTPException(
                422, f"'{name}' could not be read: {exc.reason}; send JPEG, PNG, BMP, GIF, TIFF or WebP files"
            ) from None
    return decoded


async def decode_uploads(files: list[UploadFile], channels: int, side: int, fit: Fit = CENTER) -> list[Upload]:
    """Each upload decoded as training decoded its images, in a worker thread (PIL releases the GIL).

    Raises:
        HTTPException: 422 naming the first file that is not a readable image.
    """
    return await run_in_threadpool(_decode_all, files, channels, side, fit)
