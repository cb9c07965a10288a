"""The ASGI application: routing, health, inference endpoints and /metrics, with no framework.

A raw ASGI callable keeps per-request overhead to parsing the path, reading the body, one
orjson decode and one encode: the model is the only thing that should cost time. Every response
carries ``x-mlshift-version``; every error is JSON ``{"error": ..., "field": ...}`` with the
status the Open Inference Protocol asks for: 400 for a request the model cannot take, 404 for an
unknown model or path, 405 (with ``Allow``) for a wrong method, 413 for a body over the limit,
503 from readiness routes while not ready, and 500 only when the model itself raised.

A large body is decoded in a helper process and its answer encoded in a thread
(``model_server._offload``): on the event loop, decoding a few megabytes would hold up every
other request, the health checks included, and one heavy client could get a healthy version
taken out of routing.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from model_server._batcher import Batcher, ModelCallError
from model_server._bundle import LoadedBundle
from model_server._errors import InvalidInput
from model_server._journal import Journal
from model_server._metrics import CONTENT_TYPE, ServerMetrics
from model_server._offload import Offloader
from model_server._oip import EXTENSIONS, decode_v2, encode_v2
from model_server._outputs import describe_outputs, v2_datatype
from model_server._protocol import (
    ANY_DTYPE,
    Decoded,
    InputSchema,
    decode_v1,
    encode_v1,
    to_model_input,
)
from model_server._settings import Settings

__all__ = ["ModelApp", "create_app"]

log = logging.getLogger("mlshift.model_server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_SIMPLE_ROUTES = ("/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/")
SERVER_NAME = "mlshift-model-server"
SERVER_VERSION = "0.1.0"
_READ = ("GET", "HEAD")
_WRITE = ("POST",)


class Reply(NamedTuple):
    """A response before it is sent: status, body, content type and any extra headers."""

    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


class ModelApp:
    """Serve one loaded bundle over KServe v1, OIP v2 and Prometheus text.

    Attributes:
        ready: False until startup finished and again from the moment draining starts.
        inflight: Requests currently being answered (the drain waits for 0).

    Example:
        >>> app = ModelApp(load_bundle("bundle"), Settings(model_dir="bundle"))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8080)  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedBundle, settings: Settings) -> None:
        self.loaded = loaded
        self.settings = settings
        self.name = settings.name or loaded.name
        self.version = settings.version or loaded.version
        self.schema = InputSchema.from_manifest(loaded.input_schema)
        output = loaded.output
        self.method = str(output.get("method") or "predict")
        self.task = str(output.get("task") or "regression")
        classes = output.get("classes")
        self.classes: list[Any] | None = list(classes) if isinstance(classes, list) else None
        self.outputs = describe_outputs(loaded.model, str(loaded.manifest["flavor"]), output)
        self.metrics = ServerMetrics(
            self.name, self.version, task=self.task, value_buckets=output.get("buckets")
        )
        self.batcher = Batcher(
            self._predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            observe=self._observe,
        )
        self.journal = Journal.from_env()  # the last requests' ids and answers (shadow traffic)
        self.ready = False
        self.draining = False
        self.inflight = 0
        self._version_header = (b"x-mlshift-version", self.version.encode())
        self._v1_prefix = f"/v1/models/{self.name}"
        self._v2_prefix = f"/v2/models/{self.name}"
        self._versions = f"/versions/{self.version}"
        self._offload = Offloader()

    # ------------------------------------------------------------------ model side

    def _predict(self, items: Sequence[Decoded]) -> dict[str, Any]:
        """Runs in the worker thread: each method the batch asks for, on the merged rows."""
        model_input = to_model_input(items, self.schema)
        model = self.loaded.model
        return {method: getattr(model, method)(model_input) for method in items[0].methods}

    def _observe(self, rows: int, outputs: dict[str, Any]) -> None:
        self.metrics.observe_batch(rows)
        predictions = outputs.get("predict", outputs.get("predict_proba"))
        self.metrics.observe_predictions(predictions, self.classes)

    def start_draining(self) -> None:
        """Turn readiness false; requests keep being served until the process exits."""
        if not self.draining:
            log.info("draining: readiness is now false, %d requests in flight", self.inflight)
        self.draining = True
        self.ready = False

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.batcher.start()
                _settle_heap()
                self.ready = True
                log.info("serving model %r version %r", self.name, self.version)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                await self.batcher.stop()
                self._offload.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self.inflight += 1
        route = self.route_label(scope["path"])
        try:
            reply = await self._dispatch(scope, receive)
        except InvalidInput as exc:
            body = orjson.dumps({"error": exc.message, "field": exc.field})
            allow = ((b"allow", ", ".join(exc.allow).encode()),) if exc.allow else ()
            reply = Reply(exc.status, body, headers=allow)
        except Exception as exc:  # never let a bug take the connection down without an answer
            log.exception("unexpected error answering %s", scope.get("path"))
            body = orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
            reply = Reply(500, body)
        finally:
            self.inflight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type),
                    (b"content-length", str(len(reply.body)).encode()),
                    self._version_header,
                    *reply.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
        self.metrics.observe_request(route, reply.status, time.perf_counter() - started)
        if route.endswith(("/infer", ":predict")):
            self.journal.record(scope, reply.status, time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise InvalidInput(
                    f"request body is {int(value)} bytes; the limit is {limit}"
                    " (MLSHIFT_MAX_BODY_BYTES): send fewer rows per request",
                    field="body",
                    status=413,
                )
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client went away", field="body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise InvalidInput(
                    f"request body exceeds the limit of {limit} bytes (MLSHIFT_MAX_BODY_BYTES):"
                    " send fewer rows per request",
                    field="body",
                    status=413,
                )
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _json(self, doc: Any, status: int = 200) -> Reply:
        return Reply(status, orjson.dumps(doc))

    def route_label(self, path: str) -> str:
        """The bounded ``route`` label of a path (``other`` for anything unknown)."""
        for prefix, template, known in (
            (self._v2_prefix, "/v2/models/{m}", ("", "/ready", "/infer")),
            (self._v1_prefix, "/v1/models/{m}", ("", ":predict")),
        ):
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                if rest.startswith(self._versions):
                    rest = rest[len(self._versions) :]
                return template + rest if rest in known else "other"
        path = path.rstrip("/") or "/"
        return path if path in _SIMPLE_ROUTES else "other"

    async def _dispatch(self, scope: Scope, receive: Receive) -> Reply:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == f"{self._v2_prefix}/journal":
            _check_method(path, method, _READ)
            try:
                return self._json(self.journal.read(scope.get("query_string", b"")))
            except ValueError as exc:
                raise InvalidInput(str(exc), field="query") from exc
        if path.startswith("/v2/models/") or path.startswith("/v1/models/"):
            return await self._model_route(path, method, scope, receive)
        simple = {
            "/v2/health/live": self._live,
            "/v2/health/ready": self._ready,
            "/v2": self._server_metadata,
            "/metrics": self._metrics,
            "/": self._server_metadata,
        }
        handler = simple.get(path.rstrip("/") or "/")
        if handler is None:
            raise InvalidInput(
                f"no route {path}; try /v2/models/{self.name}/infer,"
                f" /v1/models/{self.name}:predict, /v2/health/ready or /metrics",
                field="path",
                status=404,
            )
        _check_method(path, method, _READ)
        return handler()

    def _live(self) -> Reply:
        return self._json({"live": True})

    def _ready(self) -> Reply:
        return self._json({"ready": self.ready}, 200 if self.ready else 503)

    def _server_metadata(self) -> Reply:
        return self._json(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}
        )

    def _metrics(self) -> Reply:
        return Reply(200, self.metrics.render(), CONTENT_TYPE.encode())

    def _model_metadata(self) -> dict[str, Any]:
        if self.schema.kind == "dataframe":
            inputs = [
                {"name": c, "datatype": _v2_type(d), "shape": [-1]}
                for c, d in zip(self.schema.columns, self.schema.dtypes, strict=True)
            ]
        elif self.schema.kind == "array":
            shape = [-1 if d is None else d for d in self.schema.shape]
            inputs = [{"name": "input-0", "datatype": _v2_type(self.schema.dtype), "shape": shape}]
        else:
            inputs = []
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"mlshift-{self.loaded.manifest['flavor']}",
            "inputs": inputs,
            "outputs": [spec.metadata() for spec in self.outputs.values()],
        }

    async def _model_route(self, path: str, method: str, scope: Scope, receive: Receive) -> Reply:
        if path.startswith("/v1/"):
            prefix, rest = self._v1_prefix, path[len(self._v1_prefix) :]
            known = path.startswith(prefix) and rest in ("", ":predict")
        else:
            prefix, rest = self._v2_prefix, path[len(self._v2_prefix) :]
            if rest.startswith(self._versions):
                rest = rest[len(self._versions) :]
            known = path.startswith(prefix) and rest in ("", "/ready", "/infer")
        if not known:
            asked = path.split("/")[3].split(":", maxsplit=1)[0]
            if asked != self.name:
                raise InvalidInput(
                    f"model {asked!r} is not served here; this server serves {self.name!r}"
                    f" version {self.version!r}",
                    field="model",
                    status=404,
                )
            raise InvalidInput(f"no route {path}", field="path", status=404)
        if rest in (":predict", "/infer"):
            _check_method(path, method, _WRITE)
            return await self._infer(rest == "/infer", scope, receive)
        _check_method(path, method, _READ)
        if rest == "/ready":
            return self._json({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)
        if path.startswith("/v1/"):
            return self._json({"name": self.name, "ready": self.ready})
        return self._json(self._model_metadata())

    async def _infer(self, v2: bool, scope: Scope, receive: Receive) -> Reply:
        body = await self._read_body(scope, receive)
        size = len(body)
        if v2:
            header_length = None
            for key, value in scope["headers"]:
                if key == b"inference-header-content-length":
                    if not value.isdigit():
                        raise InvalidInput(
                            "Inference-Header-Content-Length must be a byte count",
                            field="Inference-Header-Content-Length",
                        )
                    header_length = int(value)
            decoded, request = await self._offload.decode(
                size, decode_v2, body, self.schema, self.method, header_length=header_length
            )
        else:
            decoded = await self._offload.decode(size, decode_v1, body, self.schema, self.method)
        for method in decoded.methods:
            if method not in self.outputs:
                raise InvalidInput(
                    f"this model has no {method}() output; it offers {', '.join(self.outputs)}",
                    field="outputs" if v2 else "parameters.method",
                )
        try:
            outputs = await self.batcher.submit(decoded)
        except ModelCallError as exc:
            return self._json({"error": exc.message}, 500)
        self.journal.note(scope, body, outputs)
        if not v2:
            method = decoded.methods[0]
            classes = self.classes if method == "predict_proba" else None
            answer = await self._offload.encode(
                size, encode_v1, outputs[method], self.name, self.version, classes
            )
            return Reply(200, answer)
        body, header_length = await self._offload.encode(
            size, encode_v2, outputs, self.name, self.version, request, self.outputs
        )
        if header_length is None:
            return Reply(200, body)
        length = (b"inference-header-content-length", str(header_length).encode())
        return Reply(200, body, b"application/octet-stream", (length,))


def _check_method(path: str, method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise InvalidInput(
            f"{path} takes {' or '.join(allowed)}, not {method}",
            field="method",
            status=405,
            allow=allowed,
        )


def _v2_type(dtype: str) -> str:
    """The v2 datatype announced for a schema dtype; ``any`` columns take any value (BYTES)."""
    d = dtype.lower()
    if d == ANY_DTYPE:
        return "BYTES"
    try:
        return v2_datatype(np.dtype(d.replace("boolean", "bool")))
    except TypeError:  # pandas names numpy does not know: "category", "str", "string"...
        return "BYTES"


def create_app(loaded: LoadedBundle, settings: Settings) -> ModelApp:
    """Build the ASGI app for a loaded bundle.

    Example:
        >>> app = create_app(load_bundle("bundle"), Settings(model_dir="bundle"))  # doctest: +SKIP
    """
    return ModelApp(loaded, settings)


def _settle_heap() -> None:
    """Take what is loaded by now (the model, every library) out of the garbage collector's view.

    A full collection walks every tracked object: with a scikit-learn model and its libraries
    loaded that is ~150,000 objects and 126-167 ms here, a pause of the event loop that every
    request in flight waits out (it showed as a p99 of 120-200 ms at 64 connections). Frozen,
    they are never walked again; only what serving creates is. Start-up takes one collection
    longer.
    """
    gc.collect()
    gc.freeze()
