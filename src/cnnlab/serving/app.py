"""The HTTP routes: ``/`` (the page), ``/predict``, ``/explain``, ``/health`` and the API docs (``/docs``: ``docs``).

Every error is JSON ``{"detail": message}`` with a 4xx status for what the client sent (see
``uploads``); an unexpected failure inside is a JSON 500 and the server goes on serving.

A request to the model goes through, in order: the origin and key checks (403, 401: ``security``),
a place in the bounded queue (503 with ``Retry-After`` at once when none is free: ``batcher``), and
the time limit of the whole request (504). ``/``, ``/health`` and ``/docs`` stay open: the page asks
for the key, and ``/health`` says whether one is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from cnnlab.deploy.predict import top_k
from cnnlab.deploy.settings import RUNTIMES
from cnnlab.serving.access_log import AccessLog
from cnnlab.serving.batcher import MicroBatcher, Scored, Ticket
from cnnlab.serving.docs import add_offline_docs
from cnnlab.serving.model import CamAnswer, ServedModel
from cnnlab.serving.security import HOW_TO_SEND, Guard
from cnnlab.serving.settings import DEFAULT_TOP_K, RETRY_AFTER_MAX_S, ServeSettings
from cnnlab.serving.uploads import FIELD, Upload, decode_uploads, form_files, read_form
from cnnlab.version import __version__

log = logging.getLogger("cnnlab")

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more image files (JPEG, PNG, BMP, GIF, TIFF, WebP)",
                        }
                    },
                }
            }
        },
    }
}


MAX_TOP_K = 1000
# What a query parameter takes, for the one-sentence error of a request that sends something else.
_ALLOWED = {"k": f"a whole number from 1 to {MAX_TOP_K} (classes per image)"}


def _invalid_request(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one sentence naming the parameter and what it takes."""
    error = exc.errors()[0]
    place, name = (error["loc"][0], str(error["loc"][-1])) if error.get("loc") else ("request", "?")
    where = {"query": "query parameter", "header": "header", "path": "path parameter"}.get(str(place), "field")
    allowed = _ALLOWED.get(name) or str(error.get("msg", "a valid value")).lower()
    got = error.get("input")
    return f"{where} '{name}' must be {allowed}, got {'nothing' if got is None else repr(got)}"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


def _as_batch(pixels: list[Any]) -> torch.Tensor:
    """(H, W, C) uint8 arrays -> one uint8 (N, C, H, W) tensor, the layout ``models.inference`` takes."""
    return torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p in pixels])


def create_app(model: ServedModel, settings: ServeSettings, batching: str = "") -> FastAPI:
    """The application serving ``model`` with ``settings``' limits and batching (``batching``: why, for /health).

    The routes come in two groups: what anyone may read (the page, /health) and what goes to the
    model (/predict, /explain: key, queue and time limit first).
    """
    service = _Service(
        model,
        settings,
        batching,
        MicroBatcher(model.infer, settings.max_batch, settings.batch_window_ms, settings.max_queue),
        Guard(settings.api_key, settings.cors_origins),
    )
    app = _new_app(service)
    app.include_router(_open_routes(service))
    app.include_router(_model_routes(service))
    return app


@dataclass
class _Service:
    """What the routes share: the model, the limits, the batcher and the guard, and /health's counters."""

    model: ServedModel
    settings: ServeSettings
    batching: str  # why it batches or not, as /health says
    batcher: MicroBatcher
    guard: Guard
    started: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=lambda: {"requests": 0, "images": 0})
    timed_out: int = 0

    @contextlib.asynccontextmanager
    async def to_the_model(self, request: Request) -> AsyncIterator[Ticket]:
        """Checks the request's origin and key, takes a place in the queue (or 503) and holds the
        request to ``--request-timeout`` (or 504); the place is freed however the request ends."""
        self.guard.check(request)
        ticket = self.batcher.admit()
        if ticket is None:
            wait = min(RETRY_AFTER_MAX_S, max(1, math.ceil(self.batcher.drain_seconds())))
            raise HTTPException(
                503,
                f"the server is busy: {self.settings.max_queue} requests are already waiting for "
                f"the model (its --max-queue); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                yield ticket
        except TimeoutError:
            self.timed_out += 1
            raise HTTPException(
                504,
                f"no answer within the server's {self.settings.request_timeout:g} s time limit "
                "(--request-timeout): the model is busy or the upload too slow; "
                "retry later",
            ) from None
        finally:
            ticket.release()

    async def uploads(self, request: Request, one: bool = False) -> list[Upload]:
        """The request's images, decoded at the model's input size (``one``: exactly one, or 400)."""
        served = self.model.served
        form = await read_form(request, self.settings)
        try:
            files = form_files(form)
            if one and len(files) != 1:
                raise HTTPException(400, f"Grad-CAM explains one image per request, got {len(files)}")
            return await decode_uploads(files, served.channels, served.stored_side, served.preprocess.fit)
        finally:
            await form.close()  # the spooled upload files

    def health(self) -> dict[str, Any]:
        """/health: the model, uptime, counters, batching, who may call and what waits."""
        batcher, guard, settings = self.batcher, self.guard, self.settings
        return {
            "status": "ok",
            "model": self.model.name,
            **self.model.describe(),
            "gradcam": self.model.has_checkpoint,
            "uptime_s": round(time.monotonic() - self.started, 1),
            **self.counts,
            "batching": {**batcher.stats(), "decision": self.batching},
            "auth": {
                "api_key_required": guard.key_required,
                "how": HOW_TO_SEND if guard.key_required else "no key needed",
                "unauthorized": guard.unauthorized,
                "cross_site_refused": guard.cross_site_refused,
            },
            "queue": {
                "waiting": batcher.waiting,
                "peak_waiting": batcher.peak_waiting,
                "max_queue": settings.max_queue,
                "rejected_busy": batcher.rejected_busy,
                "request_timeout_s": settings.request_timeout,
                "timed_out": self.timed_out,
            },
            "limits": {"max_upload_mb": settings.max_upload_mb, "max_files": settings.max_files},
            "cors_origins": list(settings.cors_origins),
            "version": __version__,
        }


def _new_app(service: _Service) -> FastAPI:
    """The FastAPI application: its description, offline docs, CORS, access log and JSON errors."""
    model, settings = service.model, service.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        yield
        await service.batcher.stop()  # uvicorn calls this after the requests in flight have finished

    needs_key = f" Needs the server's API key: {HOW_TO_SEND}." if service.guard.key_required else ""
    app = FastAPI(
        title=f"cnnlab: {model.name}",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description=f"Classifies images into {len(model.served.class_names)} classes with "
        f"{model.served.describe()}. POST images to /predict as multipart field '{FIELD}'.{needs_key}",
    )
    add_offline_docs(app)  # /docs and /redoc without a CDN: they work on an offline machine
    if settings.cors_origins:  # off by default: the page is same-origin and needs no CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key"],
            expose_headers=["Retry-After"],
        )
    if settings.access_log:  # added last: the outermost layer, so it sees every answer, CORS's included
        app.add_middleware(AccessLog, api_key=settings.api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _invalid_request(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("error serving %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    return app


def _open_routes(service: _Service) -> APIRouter:
    """The page and /health: open to anyone (the page asks for the key; /health says whether one is needed)."""
    router = APIRouter()
    served = service.model.served

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        classes = len(served.class_names)  # the page asks for predict's default k, at most every class
        text = resources.files("cnnlab.serving").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(
            text.replace("{{TOP_K}}", str(min(DEFAULT_TOP_K, classes))).replace("{{CLASSES}}", str(classes))
        )

    @router.get(
        "/health", summary="Model, classes, runtime, uptime, batching and queue counters, whether a key is needed"
    )
    async def health() -> dict[str, Any]:
        return service.health()

    return router


def _model_routes(service: _Service) -> APIRouter:
    """/predict and /explain: through the key check, the queue and the time limit to the model."""
    router = APIRouter()
    model, served = service.model, service.model.served

    @router.post("/predict", summary="Classify one or more images", openapi_extra=_UPLOAD_BODY)
    async def predict(
        request: Request, k: int = Query(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, description="classes per image")
    ) -> dict[str, Any]:
        start = time.perf_counter()
        async with service.to_the_model(request) as ticket:
            uploads = await service.uploads(request)
            decoded_ms = _ms(start)
            scored = await service.batcher.score(_as_batch([u.pixels for u in uploads]), ticket)
        service.counts["requests"] += 1
        service.counts["images"] += len(uploads)
        return _predict_answer(served, uploads, scored, k, {"total": _ms(start), "receive_decode": decoded_ms})

    @router.post(
        "/explain",
        summary="Grad-CAM overlay of one image for the class the served runtime answers "
        "(a run folder with a checkpoint)",
        openapi_extra=_UPLOAD_BODY,
    )
    async def explain(request: Request) -> dict[str, Any]:
        if not model.has_checkpoint:
            raise HTTPException(404, "Grad-CAM needs the run's checkpoint: serve the run folder, not an artifact alone")
        start = time.perf_counter()
        async with service.to_the_model(request) as ticket:
            upload = (await service.uploads(request, one=True))[0]
            answer = await service.batcher.run_alone(lambda: model.gradcam(_as_batch([upload.pixels])[0]), ticket)
        return {**_explain_answer(model, upload, answer), "latency_ms": {"total": _ms(start)}}

    return router


def _predict_answer(
    served: Any, uploads: list[Upload], scored: Scored, k: int, latency_ms: dict[str, float]
) -> dict[str, Any]:
    """/predict's answer: each image's top ``k`` classes, the runtime, where the time went, the batch."""
    predictions = []
    for upload, probs in zip(uploads, scored.probs):
        top = top_k(probs, served.class_names, k)
        predictions.append(
            {"image": upload.name, "label": top[0]["class"], "probability": top[0]["probability"], "top": top}
        )
    return {
        "predictions": predictions,
        "runtime": served.runtime,
        "runtime_name": RUNTIMES[served.runtime],
        "latency_ms": {**latency_ms, "queue": round(scored.queue_ms, 2), "inference": round(scored.inference_ms, 2)},
        "batch_images": scored.batch_images,
    }


def _explain_answer(model: ServedModel, upload: Upload, answer: CamAnswer) -> dict[str, Any]:
    """/explain's answer: the class explained, the checkpoint's own answer, the evidence and the overlay."""
    served = model.served
    caption, note = model.cam_words(answer)
    names = served.class_names
    return {
        "image": upload.name,
        "label": names[answer.target],
        "probability": answer.probability,
        "runtime": served.runtime,
        "runtime_name": RUNTIMES[served.runtime],
        "computed_on": "pytorch",
        "checkpoint": {
            "label": names[answer.checkpoint_top],
            "probability": float(answer.checkpoint_probs[answer.checkpoint_top]),
        },
        "evidence": answer.evidence,
        "caption": caption,
        "note": note,
        "overlay": "data:image/png;base64," + base64.b64encode(answer.png).decode("ascii"),
    }
