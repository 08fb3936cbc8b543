"""The FastAPI application: endpoints, limits, timeouts, and the web page.

::

    GET  /                   the web page: drop an ECG file, see the plot, measurements, conditions
    POST /v1/profile         one record: a file upload (any format ecgfm reads; WFDB as .hea +
                             .dat or a zip) or JSON samples -> the profile (JSON)
    POST /v1/profile/batch   several records in one upload -> {"profiles": [...], "errors": [...]}
    GET  /v1/health          liveness, load and batching statistics
    GET  /v1/model           the model card and configuration summary
    GET  /docs, /openapi.json

Work that touches files or numbers (staging the upload, reading, preprocessing, quality checks,
plotting) runs in a thread pool; the forward pass runs in the :class:`DynamicBatcher`'s thread,
batched across requests. The event loop only moves bytes, so a slow record never stalls others.

Limits: bodies larger than ``max_upload_bytes`` get 413 (from ``Content-Length`` before anything
is read, or as soon as the count passes the limit); a body that has not fully arrived within
``timeout_s`` gets 408 (slow clients); a request still being profiled after ``timeout_s`` gets
504; more than ``max_pending`` requests in progress get 503 with ``Retry-After``. Every error is
JSON ``{"error": code, "detail": message}`` naming the problem.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecgfm.errors import ECGError, ValidationError
from ecgfm.models.portable import Model, load_model
from ecgfm.record import ECG, Metadata
from ecgfm.serve.backends import BACKENDS, make_backend
from ecgfm.serve.batching import BatcherBusy, BatcherClosed, DynamicBatcher
from ecgfm.serve.inputs import (
    MAX_FILES,
    RequestProblem,
    SamplesIn,
    StagedUpload,
    ecg_from_samples,
    problem_from_error,
    read_record,
    stage_upload,
)
from ecgfm.serve.profiler import (
    BatchedModel,
    jsonable,
    operating_points,
    profile_record,
    render_plot,
)

__all__ = ["ServiceLimits", "app_from_env", "create_app"]

T = TypeVar("T")
MAX_BATCH_RECORDS = 64  # records in one /v1/profile/batch request
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data",)


@dataclass(frozen=True)
class ServiceLimits:
    """How much the service accepts and how long it waits."""

    max_upload_bytes: int = 16 * 1024 * 1024  # largest request body, bytes (413 beyond)
    timeout_s: float = 30.0  # body must arrive (408) and the profile be done (504) within this, s
    max_batch: int = 32  # most records in one forward pass
    batch_wait_ms: float = 5.0  # how long a record waits for others to share its forward pass, ms
    max_pending: int = 256  # requests in progress at once; more get 503
    threads: int = 0  # worker threads for reading and preprocessing; 0 = max_batch + 4
    # BLAS threads per process for the per-record numerics (quality, delineation); None leaves
    # them alone. One: requests run side by side and multithreaded small matrix products only
    # burn CPU spinning (measured: twice the CPU per profile on 2 cores).
    numeric_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_batch", "max_pending"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"service limit {name} must be >= 1, got {getattr(self, name)!r}")
        if not self.timeout_s > 0:
            raise ValidationError(f"service timeout must be > 0 s, got {self.timeout_s!r}")
        if not self.batch_wait_ms >= 0:
            raise ValidationError(f"batch wait must be >= 0 ms, got {self.batch_wait_ms!r}")


class ErrorOut(BaseModel):
    """Every error response."""

    error: str = Field(description="a short code, e.g. payload_too_large, unsupported_format")
    detail: str = Field(description="what was wrong, naming the file or field")


class ProfileOut(BaseModel):
    """The profile of one record (``ecgfm.profile``'s JSON; fields in docs/profile.md)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="'ok', or 'refused' when the record is not fit to interpret")
    reasons: list[dict[str, Any]] = Field(description="why it was refused: code, lead, message")
    record: dict[str, Any] = Field(description="record_id, source, format, fs, leads, duration ...")
    model: dict[str, Any] = Field(description="which model and backend answered")
    quality: dict[str, Any] = Field(description="signal-quality flags")
    measurements: dict[str, Any] | None = Field(description="intervals (ms), rate, axes (deg)")
    conditions: list[dict[str, Any]] = Field(description="every output, most probable first, "
                                                         "with its call at the operating points")
    risk: list[dict[str, Any]] = Field(description="risk outputs, where the model has them")
    plot: str | None = Field(None, description="base64 PNG of the 12-lead plot (with ?plot=true)")


class BatchOut(BaseModel):
    profiles: list[ProfileOut]
    errors: list[dict[str, Any]] = Field(description="records that could not be profiled: "
                                                     "source, status, error, detail")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (400, "malformed request (empty body, no file, broken multipart or JSON)"),
        (408, "the request body arrived too slowly"),
        (413, "request body or archive too large"),
        (415, "unsupported content type or ECG file format"),
        (422, "the file or samples cannot be read as an ECG"),
        (503, "the service is busy; retry after the Retry-After seconds"),
        (504, "profiling took longer than the timeout"),
    )
}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                    "description": "the ECG file(s): any format ecgfm reads; a WFDB "
                                                   "record as its .hea and .dat, or a zip"}}}},
        "application/json": {"schema": SamplesIn.model_json_schema()},
    },
}


# ---------------------------------------------------------------------------------------------
# the service state
# ---------------------------------------------------------------------------------------------
class _Service:
    """The model, backend, batcher and thread pool behind one app."""

    def __init__(self, model: Model, backend: str, limits: ServiceLimits, backend_options: dict[str, Any]) -> None:
        self.model = model
        self.limits = limits
        self.backend = make_backend(model, backend, **backend_options)
        self.batcher = DynamicBatcher(self.backend, max_batch=limits.max_batch,
                                      wait_ms=limits.batch_wait_ms,
                                      max_queue=max(limits.max_pending * MAX_BATCH_RECORDS, 1024))
        self.batched = BatchedModel(model, self.batcher, backend=self.backend.describe(),
                                    timeout_s=limits.timeout_s)
        self.executor = ThreadPoolExecutor(limits.threads or limits.max_batch + 4,
                                           thread_name_prefix="ecgfm-serve")
        self._numeric_limit = _limit_numeric_threads(limits.numeric_threads)
        self.started = time.time()
        self.in_flight = 0
        self.served = 0
        self.failed = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Count the request in (503 beyond ``max_pending``); yields its deadline (loop time)."""
        if self.in_flight >= self.limits.max_pending:
            raise RequestProblem(503, "busy", f"{self.in_flight} requests are in progress; retry shortly",
                                 headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            yield asyncio.get_running_loop().time() + self.limits.timeout_s
        finally:
            self.in_flight -= 1

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the thread pool; 504 when ``deadline`` passes first."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        future = asyncio.wrap_future(self.executor.submit(fn, *args))
        try:
            return await asyncio.wait_for(future, max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise RequestProblem(504, "timeout", f"profiling did not finish within "
                                                 f"{self.limits.timeout_s:g} s; try again later") from None

    def profile(self, ecg: ECG, plot: bool, saliency: int) -> dict[str, Any]:
        """The profile of one record (in a worker thread)."""
        try:
            out = profile_record(ecg, self.batched, saliency=saliency)
        except BatcherBusy as error:
            raise RequestProblem(503, "busy", str(error), headers={"Retry-After": "1"}) from None
        except BatcherClosed as error:
            raise RequestProblem(503, "shutting_down", str(error)) from None
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise RequestProblem(504, "timeout", "the model did not answer within "
                                                 f"{self.limits.timeout_s:g} s") from None
        except ECGError as error:
            raise problem_from_error(error) from None
        if plot:
            out["plot"] = render_plot(ecg)
        return out

    def profile_staged(self, upload: StagedUpload, path: Path, plot: bool, saliency: int) -> dict[str, Any]:
        return self.profile(read_record(path, upload), plot, saliency)

    def close(self) -> None:
        self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._numeric_limit is not None:
            self._numeric_limit.restore_original_limits()

    def warm_up(self) -> None:
        """One synthetic record through every stage, so the first request is not the slow one."""
        c = self.model.input
        seconds = max(c.min_seconds, c.seconds or 0.0, 10.0)
        t = np.arange(int(round(seconds * c.fs))) / c.fs
        beat = (np.sin(2 * np.pi * 1.2 * t) ** 63).astype(np.float32)  # narrow peaks at 72 bpm
        signal = np.stack([beat * (0.5 + 0.05 * i) for i in range(len(c.leads))])
        ecg = ECG(signal, c.fs, c.leads, Metadata(record_id="warm-up"))
        with contextlib.suppress(ECGError):
            self.profile(ecg, plot=True, saliency=0)


# ---------------------------------------------------------------------------------------------
# request body limits: size (413) and slow clients (408)
# ---------------------------------------------------------------------------------------------
class _BodyLimits:
    """ASGI middleware: refuse oversize bodies and bodies that arrive too slowly."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await _error(400, "bad_content_length", "the Content-Length header is not a number")(scope, receive, send)
                return
            if declared > self.max_bytes:
                await _error(413, "payload_too_large", _too_large(declared, self.max_bytes))(scope, receive, send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        state = {"received": 0, "done": False}

        async def limited() -> Message:
            if state["done"]:
                return await receive()  # the body is in; later receives wait for a disconnect
            remaining = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise RequestProblem(408, "request_timeout",
                                     f"the request body did not arrive within {self.timeout_s:g} s") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise RequestProblem(413, "payload_too_large",
                                         _too_large(state["received"], self.max_bytes, at_least=True))
                state["done"] = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (f"the request body is {'more than ' if at_least else ''}{size:,} bytes; "
            f"this service accepts at most {limit:,} bytes")


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------
def create_app(
    model: Model | str | os.PathLike[str] | None = None,
    *,
    backend: str = "torch",
    max_upload_bytes: int = ServiceLimits.max_upload_bytes,
    timeout_s: float = ServiceLimits.timeout_s,
    max_batch: int = ServiceLimits.max_batch,
    batch_wait_ms: float = ServiceLimits.batch_wait_ms,
    limits: ServiceLimits | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    model_threads: int | None = None,
    warm_up: bool = True,
) -> FastAPI:
    """The profile service as a FastAPI app (run it with uvicorn, or ``ecgfm serve``).

    Args:
        model: a loaded :class:`~ecgfm.models.portable.Model`, a model directory, or None for
            the bundled default model.
        backend: ``"torch"`` (PyTorch) or ``"onnx"`` (ONNX Runtime on the model's export,
            written to a cache on first use: :func:`ecgfm.serve.backends.onnx_cache_dir`).
        max_upload_bytes: largest request body in bytes (413 beyond).
        timeout_s: seconds a body may take to arrive (408) and a profile to finish (504).
        max_batch: most records in one forward pass.
        batch_wait_ms: how long a record waits for others to join its forward pass, ms.
        limits: all limits at once (:class:`ServiceLimits`); overrides the four above.
        onnx_path: with ``backend="onnx"``: a file from ``ecgfm export`` to use instead of the
            cache (it must come from this model).
        model_threads: ONNX Runtime intra-op threads (default: all cores); PyTorch's are set
            process-wide with ``torch.set_num_threads``.
        warm_up: run one synthetic record through every stage before serving.

    Returns:
        The app; ``app.state.service`` holds the model, backend and batcher
        (``app.state.service.batcher.stats()`` counts the batches run).

    >>> app = create_app("models/default", backend="onnx")      # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)           # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise ValidationError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    limits = limits or ServiceLimits(max_upload_bytes=max_upload_bytes, timeout_s=timeout_s,
                                     max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    loaded = _resolve_model(model)
    options: dict[str, Any] = {}
    if backend == "onnx":
        options = {"path": onnx_path, "threads": model_threads}
    service = _Service(loaded, backend, limits, options)
    if warm_up:
        service.warm_up()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="ecgfm profile service",
        description="ECG health profiles: ranked conditions, measurements and quality flags from "
                    "an ECG file in any supported format. See docs/serve.md.",
        version=_version(), lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_BodyLimits, max_bytes=limits.max_upload_bytes, timeout_s=limits.timeout_s)
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _resolve_model(model: Model | str | os.PathLike[str] | None) -> Model:
    if isinstance(model, Model):
        return model
    if model is not None:
        return load_model(model)
    import inspect

    parameter = inspect.signature(load_model).parameters.get("path")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ValidationError("this ecgfm has no bundled default model; pass a model directory "
                              "(create_app('path/to/model') or ecgfm serve --model DIR)")
    return load_model()  # type: ignore[call-arg]


def _version() -> str:
    import ecgfm

    return ecgfm.__version__


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestProblem)
    async def problem(_: Request, exc: RequestProblem) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _pydantic_message(exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        return _error(500, "internal_error",
                      f"unexpected {type(exc).__name__}: {exc} (please report this)")


def _pydantic_message(errors: Any, limit: int = 5) -> str:
    errors = list(errors)
    parts = []
    for err in errors[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _parse_samples(body: bytes) -> ECG:
    """A JSON body -> the record (in a worker thread: big arrays take a while)."""
    try:
        samples = SamplesIn.model_validate_json(body)
    except PydanticValidationError as error:
        errors = error.errors(include_input=False, include_url=False)
        if any(e.get("type") == "json_invalid" for e in errors):
            raise RequestProblem(400, "malformed_json", "the body is not valid JSON: "
                                 + _pydantic_message(errors)) from None
        raise RequestProblem(422, "invalid_samples", _pydantic_message(errors)) from None
    return ecg_from_samples(samples)


async def _uploads(request: Request) -> tuple[Any, list[tuple[str | None, Any]]]:
    form = await request.form(max_files=MAX_FILES, max_fields=32)
    files = [(value.filename, value.file) for _, value in form.multi_items() if isinstance(value, UploadFile)]
    return form, files


def _check_body(request: Request, accept: tuple[str, ...]) -> str:
    """The body's media type, after refusing empty bodies and types the endpoint does not take."""
    kind = _media_type(request)
    if request.headers.get("content-length") == "0":
        raise RequestProblem(400, "empty_body", "the request body is empty: upload an ECG file "
                                                "(multipart field 'file') or send JSON samples")
    if kind not in accept:
        raise RequestProblem(415, "unsupported_media_type",
                             f"content type {kind or '(none)'!r} is not accepted; send "
                             + " or ".join(accept))
    return kind


def _add_routes(app: FastAPI, service: _Service) -> None:
    limits = service.limits

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        page = resources.files("ecgfm.serve").joinpath("static", "index.html").read_text("utf-8")
        return HTMLResponse(page)

    @app.get("/v1/health", summary="Liveness and load")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model.card.name, "backend": service.backend.name,
                "uptime_s": round(time.time() - service.started, 3), "in_flight": service.in_flight,
                "served": service.served, "failed": service.failed, "batching": service.batcher.stats()}

    @app.get("/v1/model", summary="The model card and configuration")
    async def model_card() -> dict[str, Any]:
        m = service.model
        return jsonable({
            "name": m.card.name, "card": m.card_text, "card_fields": m.card.to_dict(),
            "encoder": m.config.get("encoder"), "encoder_config": m.config.get("encoder_config"),
            "head": None if m.head is None else m.head.type,
            "labels": [{"id": i, "name": n} for i, n in zip(m.labels, m.label_names)],
            "thresholds": m.thresholds,
            "operating_points": {k: list(v) for k, v in operating_points(m).items()},
            "metrics": m.metrics, "input": m.input.to_dict(), "pipeline": m.pipeline.to_spec(),
            "pipeline_hash": m.pipeline.hash, "backend": service.backend.describe(),
            "limits": {"max_upload_bytes": limits.max_upload_bytes, "timeout_s": limits.timeout_s,
                       "max_batch": limits.max_batch, "batch_wait_ms": limits.batch_wait_ms,
                       "max_batch_records": MAX_BATCH_RECORDS},
        })

    @app.post("/v1/profile", summary="Profile one ECG", response_model=ProfileOut,
              responses=_ERRORS, openapi_extra={"requestBody": _UPLOAD_BODY})
    async def profile(
        request: Request,
        plot: bool = Query(False, description="add the 12-lead plot as base64 PNG ('plot')"),
        saliency: int = Query(0, ge=0, le=10, description="top findings to explain (when supported)"),
    ) -> JSONResponse:
        """One record: a file upload (multipart field ``file``; a WFDB record as its ``.hea``
        and ``.dat`` files or one zip) or JSON samples. Refusals (a record the model cannot
        interpret) are profiles with ``status: "refused"`` and ``reasons``."""
        async with service.admit() as deadline:
            kind = _check_body(request, JSON_TYPES + FORM_TYPES)
            try:
                if kind in JSON_TYPES:
                    body = await request.body()
                    if not body:
                        raise RequestProblem(400, "empty_body", "the request body is empty")
                    ecg = await service.run(deadline, _parse_samples, body)
                    result = await service.run(deadline, service.profile, ecg, plot, saliency)
                else:
                    result = await _profile_upload(request, service, deadline, plot, saliency, single=True)
            except RequestProblem:
                service.failed += 1
                raise
            service.served += 1
            return JSONResponse(result)

    @app.post("/v1/profile/batch", summary="Profile several ECGs", response_model=BatchOut,
              responses=_ERRORS, openapi_extra={"requestBody": {
                  "required": True, "content": {"multipart/form-data": _UPLOAD_BODY["content"]["multipart/form-data"]}}})
    async def profile_batch(
        request: Request,
        plot: bool = Query(False, description="add each record's plot as base64 PNG"),
        saliency: int = Query(0, ge=0, le=10, description="top findings to explain (when supported)"),
    ) -> JSONResponse:
        """Several records in one multipart upload (files, or zip archives of them; up to
        64 records). A record that cannot be read is reported in ``errors`` and does not fail
        the others."""
        async with service.admit() as deadline:
            _check_body(request, FORM_TYPES)
            result = await _profile_upload(request, service, deadline, plot, saliency, single=False)
            service.served += len(result["profiles"])
            service.failed += len(result["errors"])
            return JSONResponse(result)


async def _profile_upload(request: Request, service: _Service, deadline: float, plot: bool,
                          saliency: int, *, single: bool) -> Any:
    import tempfile

    form, files = await _uploads(request)
    folder = Path(tempfile.mkdtemp(prefix="ecgfm-upload-"))
    try:
        staged = await service.run(deadline, _stage, files, folder, service.limits.max_upload_bytes)
        records = staged.records
        if not records:
            raise RequestProblem(400, "no_record", "the upload holds no ECG record")
        if single and len(records) > 1:
            names = ", ".join(staged.display(r) for r in records[:5])
            raise RequestProblem(400, "several_records",
                                 f"the upload holds {len(records)} records ({names}); send one "
                                 "record per request, or use /v1/profile/batch")
        if len(records) > MAX_BATCH_RECORDS:
            raise RequestProblem(413, "too_many_records", f"the upload holds {len(records)} records; "
                                                          f"at most {MAX_BATCH_RECORDS} per request")
        jobs = [service.run(deadline, service.profile_staged, staged, r, plot, saliency) for r in records]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        if single:
            if isinstance(results[0], BaseException):
                raise results[0]
            return results[0]
        profiles, errors = [], []
        for record, result in zip(records, results):
            if isinstance(result, RequestProblem):
                errors.append({"source": staged.display(record), "status": result.status,
                               "error": result.code, "detail": result.message})
            elif isinstance(result, Exception):  # a bug on one record must not cost the others
                errors.append({"source": staged.display(record), "status": 500, "error": "internal_error",
                               "detail": f"unexpected {type(result).__name__}: {result} (please report this)"})
            elif isinstance(result, BaseException):
                raise result
            else:
                profiles.append(result)
        return {"profiles": profiles, "errors": errors}
    finally:
        await form.close()
        try:
            service.executor.submit(_remove, folder)
        except RuntimeError:  # the pool is shut down: the service is stopping
            _remove(folder)


def _limit_numeric_threads(threads: int | None) -> Any:
    """Cap the process's BLAS thread pools at ``threads`` (threadpoolctl); the limiter, to undo
    it on close, or None when not asked or threadpoolctl is not installed."""
    if threads is None:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=int(threads), user_api="blas")


def _stage(files: list[tuple[str | None, Any]], folder: Path, max_bytes: int) -> StagedUpload:
    return stage_upload(files, folder, max_bytes=max_bytes)


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def app_from_env() -> FastAPI:
    """An app configured by ``ECGFM_SERVE_*`` variables (for ``uvicorn --factory`` and workers).

    ``ECGFM_SERVE_MODEL`` (directory; empty: the default model), ``ECGFM_SERVE_BACKEND``,
    ``ECGFM_SERVE_MAX_UPLOAD_BYTES``, ``ECGFM_SERVE_TIMEOUT_S``, ``ECGFM_SERVE_MAX_BATCH``,
    ``ECGFM_SERVE_BATCH_WAIT_MS``, ``ECGFM_SERVE_THREADS`` (the worker thread pool),
    ``ECGFM_SERVE_ONNX``, and ``ECGFM_SERVE_MODEL_THREADS`` (intra-op
    threads of PyTorch and ONNX Runtime per worker; several workers on few cores want fewer).
    """
    env = os.environ
    defaults = ServiceLimits()
    model_threads = int(env.get("ECGFM_SERVE_MODEL_THREADS") or 0)
    if model_threads:
        import torch

        torch.set_num_threads(model_threads)
    limits = ServiceLimits(
        max_upload_bytes=int(env.get("ECGFM_SERVE_MAX_UPLOAD_BYTES", defaults.max_upload_bytes)),
        timeout_s=float(env.get("ECGFM_SERVE_TIMEOUT_S", defaults.timeout_s)),
        max_batch=int(env.get("ECGFM_SERVE_MAX_BATCH", defaults.max_batch)),
        batch_wait_ms=float(env.get("ECGFM_SERVE_BATCH_WAIT_MS", defaults.batch_wait_ms)),
        threads=int(env.get("ECGFM_SERVE_THREADS") or defaults.threads),
    )
    return create_app(env.get("ECGFM_SERVE_MODEL") or None, backend=env.get("ECGFM_SERVE_BACKEND", "torch"),
                      limits=limits, onnx_path=env.get("ECGFM_SERVE_ONNX") or None,
                      model_threads=model_threads or None)
