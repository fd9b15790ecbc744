"""The inference server: FastAPI on uvicorn, orjson on the hot path.

    POST /v1/rank        {request_id, user_id, context: {tab, timestamp, ...}, candidates, bid?}
                         -> candidates sorted by the ranking score, every task's score,
                            the model version and A/B arm that served them
    GET  /healthz        the process is up
    GET  /readyz         models loaded and the feature store answers with compatible features
    GET  /metrics        Prometheus: latency, requests / errors by status, batch sizes,
                         model version per arm, process RSS and CPU
    POST /v1/events      {events: [{request_id, item_id, task, value, event_ms, event_id?}]}:
                         label callbacks into the event log (with `event_log` set)
    POST /admin/reload   {model, arm?, eager?} with `Authorization: Bearer TOKEN`: load,
                         warm up and swap a model in; a model that fails is refused and
                         the old one keeps serving

A request is parsed and validated (4xx naming the field and the limit), routed to its
arm by a hash of the user id, its features fetched from the store in one round trip (on
a worker thread), scored by the micro-batcher with the arm's model as it was when the
request was routed (so a hot swap never mixes versions within a request), ranked, and
appended to the request log and, with `event_log` set, to the event log as one
impression per candidate (serving/impressions.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from infnet.serving.arms import Arm, ArmTable
from infnet.serving.batching import MicroBatcher
from infnet.serving.config import ServerConfig
from infnet.serving.features import compatibility
from infnet.serving.impressions import ImpressionWriter, parse_label_events
from infnet.serving.metrics import Metrics
from infnet.serving.protocol import guarded_protocol
from infnet.serving.records import ServedRequest
from infnet.serving.request_log import RequestLog
from infnet.serving.requests import (
    RankRequest,
    RequestError,
    error_reason,
    parse_rank_request,
    read_body,
)
from infnet.serving.runtime import ServingModel
from infnet.serving.stores import (
    CorruptRecord,
    Lookup,
    StoreMeta,
    StoreUnavailable,
    decode,
    open_store,
)
from infnet.streaming.events import LABELS, EventLogUnavailable, encode, open_event_log

log = logging.getLogger("infnet.serving")


class StoreMismatch(StoreUnavailable):
    pass


class Overloaded(RuntimeError):
    pass


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


class ServingState:
    """What a serving process holds: the arms, the feature store and the meta of its current
    version, the micro-batcher, the request log and the metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = open_store(config.store)
        self.meta: StoreMeta | None = None
        self.arms = ArmTable(config)
        for a in self.arms:
            self.metrics.model_info.labels(arm=a.name, version=a.model.version).set(1)
        self.batcher = MicroBatcher(
            config.max_batch_rows, config.max_wait_ms, self.metrics.observe_batch
        )
        self.request_log = RequestLog(config.request_log) if config.request_log else None
        self.events = open_event_log(config.event_log) if config.event_log else None
        self.impressions = (
            ImpressionWriter(self.events, max_queued=config.max_queued_impressions)
            if self.events is not None
            else None
        )
        self.admitted_rows = 0  # rows of the requests between admission and their answer
        # store lookups on a small pool of their own: each thread keeps a store connection
        # (and its cache), so the pool's size bounds them, and a stalled store cannot take
        # the threads the rest of the server runs on
        self.lookup_pool = ThreadPoolExecutor(config.lookup_threads, "infnet-lookup")
        try:
            self._meta_for(self.store.meta().version)
        except StoreUnavailable as err:  # serve once the store is back; /readyz says why not yet
            log.warning("feature store not ready: %s", err)

    # --- features (worker threads) ----------------------------------------------------------
    def _meta_for(self, version: str) -> StoreMeta:
        """The meta of a feature version, checked against every arm's model once per version."""
        meta = self.meta
        if meta is None or meta.version != version:
            meta = self.store.meta(version)
            for arm in self.arms:
                problems = compatibility(
                    arm.model.schema, arm.model.vocab_fingerprint, meta, arm.model.time_aware
                )
                if problems:
                    raise StoreMismatch(
                        f"feature version {version} does not fit model {arm.model.version} (arm {arm.name}): {'; '.join(problems)}"
                    )
            self.meta = meta
            self.metrics.feature_version.clear()
            self.metrics.feature_version.labels(version=version).set(1)
        return meta

    def lookup(self, user_id: str, items: list[str]) -> Lookup:
        version, user, records = self.store.fetch(user_id, items)
        return decode(self._meta_for(version), version, user, records)

    def ready(self) -> dict[str, Any]:
        meta = self._meta_for(self.store.meta().version)
        return {
            "ready": True,
            "feature_version": meta.version,
            "arms": {a.name: a.model.version for a in self.arms},
        }

    # --- ranking ----------------------------------------------------------------------------
    async def rank(self, req: RankRequest) -> tuple[Arm, dict[str, Any]]:
        arm = self.arms.route(req.user_id)  # fixed here: a swap after this does not touch it
        context_codes = arm.assembler.encode_context(req.context, req.timestamp)
        items = [str(c) for c in req.candidates]
        # admission counts every admitted row until its request ends: rows still fetching
        # features count as much as rows queued for the model
        queued, limit = self.admitted_rows, self.config.max_queued_rows
        if queued + len(items) > limit:
            raise Overloaded(
                f"server overloaded: {queued} candidate rows are admitted (limit {limit}); retry later"
            )
        self.admitted_rows += len(items)
        try:
            self.batcher.expect()
            try:
                lookup = await asyncio.get_running_loop().run_in_executor(
                    self.lookup_pool, self.lookup, req.user_id, items
                )
            except BaseException:
                self.batcher.forget()
                raise
            inputs = arm.assembler.build(lookup, context_codes, req.timestamp)
            scores = await self.batcher.submit(arm.model, inputs)  # [K, N_task]
        finally:
            self.admitted_rows -= len(items)
        tasks = arm.model.schema.task_names
        by_task = {t: scores[:, j].astype(np.float64) for j, t in enumerate(tasks)}
        ranking = arm.ranker(by_task, req.bid)
        order = np.argsort(-ranking, kind="stable")
        known = lookup.item_known
        rows = scores.tolist()
        ranked = [
            {
                "id": req.candidates[i],
                "score": float(ranking[i]),
                "scores": dict(zip(tasks, rows[i], strict=True)),
                "known": bool(known[i]),
                "cold": bool(lookup.item_cold[i]),
            }
            for i in order.tolist()
        ]
        if not lookup.user_known:
            self.metrics.unknown.labels(kind="user").inc()
        if not known.all():
            self.metrics.unknown.labels(kind="item").inc(int((~known).sum()))
        response = {
            "request_id": req.request_id,
            "model_version": arm.model.version,
            "arm": arm.name,
            "feature_version": lookup.version,
            "unknown_user": not lookup.user_known,
            "unknown_items": [req.candidates[i] for i in np.flatnonzero(~known).tolist()],
            "cold_items": [req.candidates[i] for i in np.flatnonzero(lookup.item_cold).tolist()],
            "items": ranked,
        }
        if self.request_log is not None or self.impressions is not None:
            record = ServedRequest(
                request_id=req.request_id,
                ts_ms=req.timestamp,
                served_ms=int(time.time() * 1000),
                user_id=req.user_id,
                model_version=arm.model.version,
                arm=arm.name,
                feature_version=lookup.version,
                context=req.context,
                bid=req.bid,
                candidates=req.candidates,
                unknown_user=not lookup.user_known,
                item_known=known,
                scores=by_task,
                ranking=ranking,
                categorical=inputs.categorical,
                seq_ids=inputs.seq_ids,
                seq_mask=inputs.seq_mask,
                seq_gap=inputs.seq_gap,
                shown=req.shown,
            )
            if self.request_log is not None:
                self.request_log.append(record)
            if self.impressions is not None:
                self.impressions.append(record)
        return arm, response

    # --- hot swap ---------------------------------------------------------------------------
    async def reload(
        self, model_dir: str, arm_name: str | None, eager: bool | None
    ) -> dict[str, Any]:
        def problems(model: ServingModel) -> list[str]:
            if self.meta is None:
                return []
            return compatibility(model.schema, model.vocab_fingerprint, self.meta, model.time_aware)

        try:
            old, new = await self.arms.reload(model_dir, arm_name, eager, problems)
        except RequestError as err:
            if err.field == "model":
                self.metrics.reloads.labels(result="refused").inc()
            raise
        self.metrics.model_info.remove(old.name, old.model.version)
        self.metrics.model_info.labels(arm=new.name, version=new.model.version).set(1)
        self.metrics.reloads.labels(result="swapped").inc()
        log.info("arm %s: %s -> %s", new.name, old.model.version, new.model.version)
        return {"arm": new.name, "version": new.model.version, "previous": old.model.version}

    def tasks(self) -> dict[str, str]:
        """task -> kind, over every arm's model: what a label callback may name."""
        return {t.name: t.kind for a in self.arms for t in a.model.schema.tasks}

    def close(self) -> None:
        self.batcher.stop()
        self.lookup_pool.shutdown(wait=False, cancel_futures=True)
        if self.request_log is not None:
            self.request_log.close()
        if self.impressions is not None:
            self.impressions.close()
        if self.events is not None:
            self.events.close()
        self.store.close()


def _error(err: RequestError) -> Response:
    content: dict[str, Any] = {"error": str(err), "field": err.field}
    if err.limit is not None:
        content["limit"] = err.limit
    return _json(content, err.status)


def create_app(config: ServerConfig) -> FastAPI:
    """The app; models are loaded (and warmed up) here, before any port is bound."""
    state = ServingState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="infnet", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.serving = state
    metrics = state.metrics

    @app.post("/v1/rank")
    async def rank(request: Request) -> Response:
        started = time.perf_counter()
        arm_name = "none"
        try:
            body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
            req = parse_rank_request(body, config.max_candidates)
            arm, content = await state.rank(req)
            arm_name = arm.name
            response = _json(content)
        except RequestError as err:
            response = _error(err)
            metrics.errors.labels(status=str(err.status), reason=error_reason(err.field)).inc()
        except StoreUnavailable as err:
            response = _json({"error": f"feature store unavailable: {err}"}, 503)
            metrics.errors.labels(status="503", reason="store").inc()
        except Overloaded as err:
            response = _json({"error": str(err)}, 503)
            response.headers["retry-after"] = "1"
            metrics.errors.labels(status="503", reason="overloaded").inc()
        except ClientDisconnect:  # nobody to answer: not a server error
            response = Response(status_code=499)
            metrics.errors.labels(status="499", reason="disconnect").inc()
        except CorruptRecord as err:  # this request's records only; the store needs a reload
            log.error("rank %s: %s", req.request_id, err)
            response = _json({"error": str(err)}, 500)
            metrics.errors.labels(status="500", reason="store_record").inc()
        except Exception:
            # the detail (model node names, paths) goes to the log, not to the client
            log.exception("rank failed")
            response = _json({"error": "internal error; the server log has the detail"}, 500)
            metrics.errors.labels(status="500", reason="internal").inc()
        elapsed = time.perf_counter() - started
        response.headers["server-timing"] = f"total;dur={elapsed * 1000:.3f}"
        metrics.requests.labels(status=str(response.status_code), arm=arm_name).inc()
        metrics.latency.labels(arm=arm_name).observe(elapsed)
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.request_log is not None and not state.request_log.alive:
            error = f"the request log writer stopped ({state.request_log.path})"
            return _json({"ready": False, "error": error}, 503)
        if state.impressions is not None and not state.impressions.alive:
            error = f"the impression writer stopped ({state.events.url})"
            return _json({"ready": False, "error": error}, 503)
        try:
            return _json(await run_in_threadpool(state.ready))
        except StoreUnavailable as err:
            return _json({"ready": False, "error": f"feature store unavailable: {err}"}, 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.request_log_errors.set(state.request_log.errors if state.request_log else 0)
        if state.impressions is not None:
            metrics.impressions.labels(result="written").set(state.impressions.written)
            metrics.impressions.labels(result="dropped").set(state.impressions.dropped)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/events")
    async def events(request: Request) -> Response:
        if state.events is None:
            return _json(
                {"error": "no event log configured (event_log); labels are not taken"}, 404
            )
        try:
            body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
            labels = parse_label_events(body, state.tasks(), config.max_label_events)
            await run_in_threadpool(state.events.append, LABELS, [encode(x) for x in labels])
        except RequestError as err:
            metrics.errors.labels(status=str(err.status), reason=error_reason(err.field)).inc()
            return _error(err)
        except EventLogUnavailable as err:  # not taken: the client sends them again
            metrics.errors.labels(status="503", reason="event_log").inc()
            response = _json({"error": f"{err}; nothing was appended, retry"}, 503)
            response.headers["retry-after"] = "1"
            return response
        metrics.label_events.inc(len(labels))
        return _json({"accepted": len(labels)})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        token = config.token()
        if not token:
            return _json(
                {
                    "error": "reload is disabled: no admin token configured (admin_token or INFNET_ADMIN_TOKEN)"
                },
                403,
            )
        if not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
        ):
            return _json(
                {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"}, 401
            )
        try:
            data = orjson.loads(
                await read_body(request, config.max_body_bytes, config.body_timeout_s)
            )
            if not isinstance(data, dict) or not isinstance(data.get("model"), str):
                raise RequestError("model", "required: the model directory to load")
            for key in data:
                if key not in ("model", "arm", "eager"):
                    raise RequestError(key, "unknown field; a reload has model, arm, eager")
            if not isinstance(data.get("arm"), str | None) or not isinstance(
                data.get("eager"), bool | None
            ):
                raise RequestError(
                    "arm" if not isinstance(data.get("arm"), str | None) else "eager",
                    "wrong type (arm: string, eager: boolean)",
                )
            return _json(await state.reload(data["model"], data.get("arm"), data.get("eager")))
        except orjson.JSONDecodeError as err:
            return _json({"error": f"malformed JSON ({err})", "field": "body"}, 400)
        except RequestError as err:
            return _error(err)

    return app


def uvicorn_config(app: FastAPI, config: ServerConfig, host: str, port: int):
    """How the app is served: uvloop, httptools with a header deadline, no access log."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(config.header_timeout_s),
        log_level="warning",
        access_log=False,
    )


def run_server(config: ServerConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app = create_app(config)
    state: ServingState = app.state.serving
    for a in state.arms:
        print(
            f"arm {a.name} buckets {list(a.buckets)}: {a.model.version} ({'eager' if a.model.eager else 'onnx'}) from {Path(a.model.path)}"
        )
    print(f"feature store {state.store.url}; serving on http://{host}:{port}", flush=True)
    uvicorn.Server(uvicorn_config(app, config, host, port)).run()
