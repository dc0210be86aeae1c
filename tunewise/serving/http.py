"""`tunewise serve`: a fine-tuned run (or its ONNX export) behind HTTP, for every task.

    POST /predict   {"inputs": [...]} -> {"predictions": [...]}: what predict() takes and returns, in order;
                    with "explain": true (and optionally "explain_label", "explain_method") each prediction has
                    its "explanation", as predict(explain=True) gives it
    GET  /health    200 once the model is loaded (503 while it loads, or when it could not be loaded)
    GET  /info      the task, its labels, the run's metrics, the model card's intended use, whether it can explain
    GET  /metrics   Prometheus: requests, latency, batch sizes, queue depth, the screen's decisions

An image's heat map comes back inside the JSON as `heatmap_png_base64` (the PNG's bytes, base64-encoded)
instead of predict()'s `heatmap_png` path: a path on the server is of no use to a client, and nothing is
left on the server's disk. Explained and plain requests never share a model call (the batcher groups by
the explanation settings), so each is answered exactly as predict() with the same settings would.

Requests are batched across clients (`serving.batching`); the model runs in a thread of its own, so
the event loop keeps answering. Every failure has its status and a JSON body `{"error": ...}` naming
the field or the limit: 422 malformed JSON, inputs the task does not take or explain settings the model cannot
use (`explain` on an export, an unknown `explain_label` or `explain_method`), 413 a request over the
size limits, 429 a full queue, 401 a missing or wrong API key, 404 an unknown route, 500 a model error
(no traceback leaves the server, which stays up), 503 no model yet. Inputs are never logged unless
`log_inputs` asks, and then with personal data replaced by its type.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hmac
import itertools
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunewise.audit.pii import PiiScanner, redact_text
from tunewise.errors import ConfigError, TunewiseError
from tunewise.explain.settings import ExplainSettings
from tunewise.runs.layout import CARD_FILE, EXPORT_FILE, METRICS_FILE
from tunewise.runs.reader import read_json
from tunewise.serving.batching import Batcher, BatchLimits, QueueFull
from tunewise.serving.metrics import ServerMetrics
from tunewise.serving.payload import InputError, as_json, check_inputs, embedded_png, task_inputs
from tunewise.serving.predictor import EXPLANATION_COLUMN, FineTunedModel, as_prediction

logger = logging.getLogger("tunewise.serve")
API_KEY_ENV = "TUNEWISE_API_KEY"
OPEN_ROUTES = frozenset({"/health"})  # load balancers and orchestrators probe it without a key
ROUTES = "POST /predict, GET /health, GET /info, GET /metrics"
COUNTED_ROUTES = frozenset({"/predict", "/health", "/info", "/metrics"})

ModelLoader = Callable[[Path], FineTunedModel]


@dataclass(frozen=True)
class ServerSettings:
    """What one server accepts and how it batches; `tunewise serve --help` documents each option."""

    batching: BatchLimits = field(default_factory=BatchLimits)
    max_request_inputs: int = 64  # inputs in one request (413 above)
    max_request_bytes: int = 16 * 1024 * 1024  # bytes of one request body (413 above); images travel as base64
    api_key: str | None = None  # required as `Authorization: Bearer KEY` or `X-API-Key: KEY` when set
    log_inputs: bool = False  # log each request's inputs, personal data replaced by its type


class PredictRequest(BaseModel):
    """The body of POST /predict (text-embeddings-inference's convention)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] | str = Field(
        description="What predict() takes: texts, [text, pair] lists, word lists, {question, context} objects, "
        "conversations, or base64 images; one string is one input"
    )
    explain: bool = Field(
        default=False,
        description="Explain each prediction: per-word attributions (an image: a heat map as base64 PNG); several "
        "times the cost of a prediction",
    )
    explain_label: str | None = Field(
        default=None, description="With explain: explain this label (an entity type for NER) instead of the predicted"
    )
    explain_method: str = Field(
        default="auto", description="With explain: auto or a Captum method (GET /info lists the model's)"
    )


class Served:
    """The server's state: the model once loaded (or why it could not be), the batcher and the metrics."""

    def __init__(self, folder: Path, settings: ServerSettings, loader: ModelLoader):
        self.folder = folder
        self.settings = settings
        self.loader = loader
        self.metrics = ServerMetrics()
        self.batcher = Batcher(self._predict_frames, settings.batching, self.metrics.observe_batch)
        self.model: FineTunedModel | None = None
        self.load_error: str | None = None
        self.info: dict[str, Any] = {}  # GET /info, once the model is loaded (`describe`)
        self.on_load_failure: Callable[[], None] | None = None  # `run_server` stops the server with it
        self._scanner: PiiScanner | None = None
        self._processor: Any = None  # the preparation thread's own copy of the model's tokenizer
        self._prepare_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewise-prepare")

    async def load(self) -> None:
        """Load the model in the model's thread, so /health answers (503) while it loads."""
        try:
            model = await self.batcher.in_model_thread(self.loader, self.folder)
            self.info = as_json(await self.batcher.in_model_thread(self.describe, model))
            self._processor = copy.deepcopy(model.processor)
            self.model = model  # ready: set last
            logger.info("model loaded from %s; ready", self.folder)
        except Exception as error:  # any failure to load is reported the same way, then the server stops
            self.load_error = str(error) if isinstance(error, TunewiseError) else f"{type(error).__name__}: {error}"
            logger.error("the model cannot be loaded: %s", self.load_error)
            if self.on_load_failure is not None:
                self.on_load_failure()

    async def prepare(self, inputs: list[Any], scratch: Path | None) -> tuple[pd.DataFrame, int]:
        """One request's inputs as the frame the model predicts on, and its tokens for the batch budget, in the
        preparation thread with a tokenizer of its own (a tokenizer is not safe to share between threads), so
        requests are read while the model works."""
        return await asyncio.get_running_loop().run_in_executor(self._prepare_thread, self._prepare, inputs, scratch)

    def _prepare(self, inputs: list[Any], scratch: Path | None) -> tuple[pd.DataFrame, int]:
        model = self.model
        assert model is not None
        frame = check_inputs(model.facts, model.task.data.from_inputs, task_inputs(model.facts, inputs, scratch))
        lengths = model.task.data.encode(frame, self._processor, model.max_length, "predict").lengths
        return frame, int(np.asarray(lengths).sum()) if lengths is not None else 0

    def stop(self) -> None:
        self._prepare_thread.shutdown(wait=True, cancel_futures=True)

    def explain_settings(self, body: PredictRequest) -> ExplainSettings | None:
        """A request's explanation settings, checked against the model (None: no explanation); an InputError
        names the field to change."""
        model = self.model
        assert model is not None
        if not body.explain:
            given = "explain_label" if body.explain_label is not None else "explain_method"
            if body.explain_label is not None or body.explain_method != "auto":
                raise InputError(given, 'goes with "explain": true; add it, or leave this field out.')
            return None
        try:
            model.check_explainable()
        except ConfigError as error:
            raise InputError("explain", str(error)) from None
        try:
            return model.explain_settings(body.explain_label, body.explain_method)
        except ConfigError as error:
            raise InputError("explain_method", str(error)) from None

    def _predict_frames(self, frames: list[pd.DataFrame], key: Hashable) -> list[list[dict[str, Any]]]:
        """One model call for the frames of a batch, which share `key`: their explanation settings or None. An
        image model's heat maps are written to a folder of the call's own and sent back as base64 PNG."""
        model = self.model
        assert model is not None
        explain = key if isinstance(key, ExplainSettings) else None
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        heat_maps = explain is not None and not model.facts.capabilities.reads_text
        with contextlib.ExitStack() as scratch:
            if explain is not None and heat_maps:
                folder = scratch.enter_context(tempfile.TemporaryDirectory(prefix="tunewise-heatmaps-"))
                explain = dataclasses.replace(explain, folder=Path(folder))
            records = model.predict_frame(frame, explain).to_dict(orient="records")
            predictions = [as_json(as_prediction(record)) for record in records]
            if heat_maps:
                for prediction in predictions:
                    prediction[EXPLANATION_COLUMN] = [embedded_png(item) for item in prediction[EXPLANATION_COLUMN]]
        if model.screen_counts:
            self.metrics.observe_screen(model.screen_counts)
            model.screen_counts = {}
        bounds = np.cumsum([0] + [len(frame) for frame in frames])
        return [predictions[start:end] for start, end in itertools.pairwise(bounds)]

    def describe(self, model: FineTunedModel) -> dict[str, Any]:
        """What GET /info answers, read once when the model is loaded: the run's files do not change while
        it is served."""
        facts = model.facts
        export = read_json(self.folder / EXPORT_FILE)
        described: dict[str, Any] = {
            "task": facts.name,
            "problem_type": facts.problem_type,
            "targets": facts.targets,
            "labels": list(facts.label_names),
            "inputs": input_form(model),
            "model": model.config.model,
            "runtime": "onnxruntime" if export else "pytorch",
            "metrics": read_json(self.folder / METRICS_FILE) or (export or {}).get("metrics"),
            "intended_use": intended_use(self.folder / CARD_FILE),
            "limits": {
                **asdict(self.settings.batching),
                "max_request_inputs": self.settings.max_request_inputs,
                "max_request_bytes": self.settings.max_request_bytes,
            },
        }
        screen = model.screen()
        if screen is not None:
            described["screen"] = screen.describe()
        try:
            model.check_explainable()
            described["explanations"] = {
                "available": True,
                "methods": ["auto", *model.explain_methods()],
                "steps": model.config.explain.steps,
            }
        except ConfigError as error:
            described["explanations"] = {"available": False, "why": str(error)}
        return described

    def redacted(self, inputs: list[Any]) -> list[Any]:
        """The inputs as the log may hold them: texts with personal data replaced by <TYPE>, images by their size."""
        assert self.model is not None
        if not self.model.facts.capabilities.reads_text:
            return [f"<image, {len(item) if isinstance(item, str) else 0} base64 characters>" for item in inputs]
        if self._scanner is None:
            self._scanner = PiiScanner(self.model.config.audit.pii_patterns)
        scanner = self._scanner

        def redact(value: Any) -> Any:
            if isinstance(value, str):
                return redact_text(value, scanner.scan_text(value), "replace", "")
            if isinstance(value, list):
                return [redact(item) for item in value]
            if isinstance(value, dict):
                return {key: redact(item) for key, item in value.items()}
            return value

        return [redact(item) for item in inputs]


def input_form(model: FineTunedModel) -> str:
    """What one input of POST /predict is, for /info: the task's own words for what predict() takes (JSON lists
    stand for its tuples), except images, which travel base64-encoded instead of as paths."""
    if not model.facts.capabilities.reads_text:
        return "an image file's bytes, base64-encoded (a data: URI works too)"
    described = (model.task.data.from_inputs.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(described.split())


def intended_use(card: Path) -> str | None:
    """The model card's "Intended use" section, as written."""
    if not card.is_file():
        return None
    found = re.search(r"^## Intended use\s*\n(.*?)(?=^## |\Z)", card.read_text(encoding="utf-8"), re.S | re.M)
    return found.group(1).strip() if found else None


def create_app(folder: Path, settings: ServerSettings, loader: ModelLoader) -> FastAPI:
    """The app serving `folder` (a run folder or an export); `loader` loads it (`serving.predictor.load`)."""
    served = Served(folder, settings, loader)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.batcher.start()
        loading = asyncio.get_running_loop().create_task(served.load())
        yield
        loading.cancel()
        await served.batcher.stop()
        served.stop()

    app = FastAPI(title="tunewise", summary=f"tunewise serving {folder.name}", lifespan=lifespan)
    app.state.served = served

    app.add_middleware(AuthoriseAndCount, served=served)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}; the routes are {ROUTES}.")
        if error.status_code == 405:
            return _error(405, f"{request.url.path} does not take {request.method}; the routes are {ROUTES}.")
        return _error(error.status_code, str(error.detail))

    @app.get("/health")
    async def health() -> Response:
        if served.model is not None:
            return JSONResponse({"status": "ready"})
        if served.load_error is not None:
            return JSONResponse({"status": "failed", "error": served.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/info")
    async def info() -> Response:
        if served.model is None:
            return _not_ready(served)
        return JSONResponse(served.info)

    @app.get("/metrics")
    async def metrics() -> Response:
        served.metrics.queue_depth.set(served.batcher.queued_inputs)
        return Response(generate_latest(served.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
            return _too_large(int(declared), settings)
        body = await request.body()
        if len(body) > settings.max_request_bytes:
            return _too_large(len(body), settings)
        try:
            payload = PredictRequest.model_validate_json(body)
        except ValidationError as error:
            return _invalid(error)
        inputs = [payload.inputs] if isinstance(payload.inputs, str) else payload.inputs
        if not inputs:
            return _error(422, "inputs: the list is empty; send at least one input.", field="inputs")
        if len(inputs) > settings.max_request_inputs:
            return _error(
                413,
                f"inputs: {len(inputs)} in one request, over the limit of {settings.max_request_inputs} "
                "(--max-request-inputs); split the request.",
                field="inputs",
            )
        if served.model is None:
            return _not_ready(served)
        try:
            explain = served.explain_settings(payload)
        except InputError as error:
            return _error(422, str(error), field=error.field)
        started = time.perf_counter()
        reads_text = served.model.facts.capabilities.reads_text  # images are decoded into a folder of their own
        with contextlib.nullcontext() if reads_text else tempfile.TemporaryDirectory(prefix="tunewise-") as scratch:
            try:
                with served.batcher.admission(len(inputs)):
                    frame, tokens = await served.prepare(inputs, Path(scratch) if scratch else None)
                    predictions = await served.batcher.submit(frame, tokens, explain)
            except InputError as error:
                return _error(422, str(error), field=error.field)
            except QueueFull as error:
                response = _error(429, str(error))
                response.headers["Retry-After"] = "1"
                return response
            except TunewiseError as error:  # the task refused what it was given (an image it cannot decode, a label)
                chosen = explain is not None and explain.label is not None and isinstance(error, ConfigError)
                return _error(422, str(error), field="explain_label" if chosen else "inputs")
            except Exception as error:
                served.metrics.model_errors.inc()
                logger.exception("the model failed on a request of %d input(s)", len(inputs))
                return _error(
                    500, f"the model failed on this request ({type(error).__name__}); the server's log has the details."
                )
        served.metrics.inputs.inc(len(inputs))
        milliseconds = (time.perf_counter() - started) * 1000
        if settings.log_inputs:
            logger.info("predict: %d input(s), %.1f ms: %s", len(inputs), milliseconds, served.redacted(inputs))
        else:
            logger.info("predict: %d input(s), %.1f ms", len(inputs), milliseconds)
        return JSONResponse({"predictions": predictions})

    return app


def run_server(folder: Path, host: str, port: int, settings: ServerSettings, loader: ModelLoader) -> None:
    """Serve until interrupted. A model that cannot be loaded stops the server and raises its error."""
    app = create_app(folder, settings, loader)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False))
    served: Served = app.state.served

    def stop() -> None:
        server.should_exit = True

    served.on_load_failure = stop
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    package_logger = logging.getLogger("tunewise")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        server.run()
    finally:
        package_logger.removeHandler(handler)
    if served.load_error is not None:
        raise TunewiseError(f"{folder}: the model cannot be served: {served.load_error}")


class AuthoriseAndCount:
    """Every request: the API key checked (all routes but /health), its status and latency counted. A plain ASGI
    middleware (FastAPI's `@app.middleware("http")` wraps each request and response in extra tasks and streams)."""

    def __init__(self, app: ASGIApp, served: Served):
        self.app = app
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what a request that raised before answering counts as

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        key = self.served.settings.api_key
        if key is not None and path not in OPEN_ROUTES and not _authorised(Headers(scope=scope), key):
            refused = _error(401, "a valid API key is required: send `Authorization: Bearer KEY` or `X-API-Key: KEY`.")
            refused.headers["WWW-Authenticate"] = "Bearer"
            await refused(scope, receive, counted)
        else:
            await self.app(scope, receive, counted)
        route = path if path in COUNTED_ROUTES else "other"  # unknown paths are one label, not one each
        self.served.metrics.requests.labels(route, str(status)).inc()
        self.served.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _authorised(headers: Headers, key: str) -> bool:
    header = headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), key.encode())


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def _invalid(error: ValidationError) -> JSONResponse:
    """422 naming each field pydantic refused (`inputs`, or `body` for JSON that does not parse)."""
    problems = []
    for problem in error.errors(include_url=False):
        location = ".".join(str(part) for part in problem["loc"]) or "body"
        problems.append({"field": location, "message": problem["msg"]})
    message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return JSONResponse(
        {
            "error": f'{message}. Send JSON like {{"inputs": [...]}}.',
            "field": problems[0]["field"],
            "problems": problems,
        },
        status_code=422,
    )


def _too_large(size: int, settings: ServerSettings) -> JSONResponse:
    return _error(
        413,
        f"the request body is {size} bytes, over the limit of {settings.max_request_bytes} (--max-request-bytes); "
        "send fewer or smaller inputs per request.",
    )


def _not_ready(served: Served) -> JSONResponse:
    if served.load_error is not None:
        return _error(503, f"the model could not be loaded: {served.load_error}")
    response = _error(503, "the model is still loading; retry when GET /health answers 200.")
    response.headers["Retry-After"] = "1"
    return response
