"""Reading an upload: the body, counted against the limits as it arrives, and the `image` parts of a
multipart form (python-multipart's streaming parser, every part in memory, no temporary files).

HTTP through and through, so its refusals are HTTPExceptions (415, 413, 408, 400); only a full
worker is the service's own ``Busy`` (503 with Retry-After, as the work queue answers).
"""

from __future__ import annotations

import anyio
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

try:
    import python_multipart
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header
except ModuleNotFoundError:  # pragma: no cover - python-multipart before 0.0.13
    import multipart as python_multipart
    from multipart.exceptions import FormParserError
    from multipart.multipart import parse_options_header

from runtime.serve.config import ServeConfig
from runtime.serve.errors import Busy
from runtime.serve.service import Service
from runtime.serve.work import WorkQueue

READING_BODIES = 8  # bodies being read and waiting together: at most this many --max-bytes (503 beyond)


async def read_images(request: Request, service: Service, batch: bool) -> list[bytes]:
    """The uploaded image bytes: the body itself (image/*) or the multipart `image` fields."""
    config = service.config
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data") or (batch and kind != "multipart/form-data"):
        expected = "multipart/form-data" if batch else "an image/* content type or multipart/form-data"
        raise HTTPException(415, f"content type {kind or 'missing'!r}: send {expected} "
                                 "(with `image` fields for multipart)")
    service.work.check()  # a full queue: 503 before the body is even read
    body = await read_body(request, config, service.work, READING_BODIES * config.max_bytes)
    if kind.startswith("image/"):
        return [body]
    images = multipart_images(request.headers["content-type"], body, config.max_batch if batch else 1)
    if not images:
        raise HTTPException(400, "the multipart form has no `image` field")
    return images


async def read_body(request: Request, config: ServeConfig, work: WorkQueue, budget: int) -> bytes:
    """The body, counted as it arrives against --max-bytes and, with every other upload of this
    worker still arriving or waiting for the work thread, against ``budget`` (Busy beyond): many
    slow uploads at once cannot hold more memory than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_bytes:
        raise HTTPException(413, f"body of {int(declared):,} bytes; the limit is {config.max_bytes:,}")
    chunks, size = [], 0
    try:
        with anyio.fail_after(config.body_timeout):
            async for chunk in request.stream():  # chunked uploads are counted as they come
                size += len(chunk)
                work.reading += len(chunk)
                if size > config.max_bytes:
                    raise HTTPException(413, f"body over the limit of {config.max_bytes:,} bytes")
                if work.reading + work.pending_bytes > budget:
                    raise Busy("busy: too many uploads arriving at once; try again shortly")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {config.body_timeout:g} s") from None
    except ClientDisconnect:  # nobody will read the answer; counted as a 400, not logged as a crash
        raise HTTPException(400, "the client went away before sending the whole body") from None
    finally:
        work.reading -= size
    return b"".join(chunks)


MAX_FIELDS = 16  # form fields besides the images, ignored


class Part:
    """One part of a multipart body: its headers (lower-case names) and its bytes."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()

    @property
    def name(self) -> str | None:
        name = parse_options_header(self.headers.get(b"content-disposition", b""))[1].get(b"name")
        return None if name is None else name.decode("utf-8", "replace")

    @property
    def is_file(self) -> bool:
        """Sent as a file: with a file name, or with a content type other than text (a browser sends a
        text field without either; some clients send a file without a name)."""
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        kind = self.headers.get(b"content-type", b"").strip().lower()
        return b"filename" in options or (bool(kind) and not kind.startswith(b"text/"))


def multipart_images(content_type: str, body: bytes, max_images: int) -> list[bytes]:
    """The bytes of the multipart body's `image` parts, in order (python-multipart's streaming parser:
    every part in memory as it is, the body being in memory already; no temporary files)."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart body: no boundary in the content type")
    parts: list[Part] = []
    header = [b"", b""]

    def begin() -> None:
        if len(parts) >= max_images + MAX_FIELDS:
            raise HTTPException(400, f"malformed multipart body: more than {max_images + MAX_FIELDS} parts")
        parts.append(Part())

    def header_end() -> None:
        parts[-1].headers[header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def headers_done() -> None:
        part = parts[-1]
        if part.name is None:
            raise HTTPException(400, 'malformed multipart body: a part without a Content-Disposition "name"')
        if part.name == "image" and sum(p.name == "image" for p in parts) > max_images:
            raise HTTPException(400, f"too many images: at most {max_images} per request")

    callbacks = {"on_part_begin": begin,
                 "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
                 "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
                 "on_header_end": header_end, "on_headers_finished": headers_done,
                 "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end])}
    try:
        parser = python_multipart.MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise HTTPException(400, f"malformed multipart body: {e}") from None
    images = []
    for part in parts:
        if part.name == "image":
            if not part.is_file:
                raise HTTPException(400, "the `image` field must be a file, not text")
            images.append(bytes(part.data))
            part.data = bytearray()
    return images
