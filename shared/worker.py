"""What every worker process shares: the bus, its micro-service identity, metrics, drain.

A worker kind supplies a `Capabilities` value and an async `start(runtime)` that sets up its
subscriptions; this module runs it until SIGTERM/SIGINT and then drains cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import prometheus_client
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.micro import add_service
from nats.micro.service import EndpointConfig, Request, Service, ServiceConfig

from shared import bus, metrics, telemetry
from shared.config import Settings
from shared.messages import AssistantTurn, Capabilities, TranslateWork, TtsWork, decode, encode
from shared.process import wait_for_signal
from shared.subjects import Subjects

log = logging.getLogger("parley.worker")

VERSION = "0.1.0"
# A worker that dies holding work: JetStream redelivers it after ACK_WAIT_S. Kept short so
# a SIGKILLed worker's work is redone within seconds (it was 30 s, past the 10 s work
# deadline, so the redelivered work was dropped as too late); a handler that takes longer
# says "in progress" every HEARTBEAT_S instead.
ACK_WAIT_S = 4.0
HEARTBEAT_S = ACK_WAIT_S / 3
LAG_CHECK_S = 5.0
MAX_DELIVER = 5


@dataclass
class Runtime:
    kind: str
    settings: Settings
    subjects: Subjects
    nc: Client
    js: JetStreamContext
    tasks: list[asyncio.Task] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def _serve_caps(service: Service, subjects: Subjects, caps: Capabilities) -> None:
    payload = encode(caps)

    async def handler(request: Request) -> None:
        await request.respond(payload)

    await service.add_endpoint(
        EndpointConfig(name="caps", subject=subjects.caps(caps.kind), handler=handler)
    )


def _start_metrics(host: str, port: int) -> str:
    """Serve /metrics; the URL it returns is the one operators (and $SRV.INFO) see."""
    server, _ = prometheus_client.start_http_server(port, addr=host)
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{server.server_port}/metrics"


async def run_worker(
    kind: str,
    settings: Settings,
    caps: Capabilities,
    start: Callable[[Runtime], Awaitable[None]],
    extra_endpoints: Callable[[Service, Runtime], Awaitable[None]] | None = None,
) -> None:
    subjects = Subjects(settings.prefix)
    metrics_url = _start_metrics(settings.metrics_host, settings.metrics_port)
    nc = await bus.connect(settings.nats_url, f"parley-{kind}")
    js = nc.jetstream()
    await bus.ensure_streams(js, subjects, settings.resume_window_s, settings.stream_replicas)
    runtime = Runtime(kind, settings, subjects, nc, js)
    service = await add_service(
        nc,
        ServiceConfig(
            name=subjects.service_name(kind),
            version=VERSION,
            description=f"Parley {kind} worker ({settings.engines} engines)",
            metadata={"metrics_url": metrics_url, "pid": str(os.getpid()), "engines": settings.engines},
        ),
    )
    await _serve_caps(service, subjects, caps)
    await start(runtime)
    if extra_endpoints:  # after start: endpoints may use what it set up
        await extra_endpoints(service, runtime)
    log.info("%s worker ready (engines=%s, metrics %s)", kind, settings.engines, metrics_url)
    await wait_for_signal()
    log.info("%s worker draining", kind)
    await service.stop()  # first leave the queue groups: no new claims or requests come here
    runtime.stopping.set()
    # Consumers see `stopping`, finish their in-flight work and leave; stragglers are cut
    # and hand their work back (nak: redelivered at once to another instance).
    timeout_s = settings.drain_timeout_s
    done, pending = await asyncio.wait(runtime.tasks, timeout=timeout_s) if runtime.tasks else ((), ())
    for task in pending:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    for close in runtime.closers:
        await close()
    await nc.drain()



WorkHandler = Callable[[object, Msg], Awaitable[None]]


async def consume_work(runtime: Runtime, work_kind: str, handle: WorkHandler, concurrency: int) -> None:
    """Pull work from the JetStream work queue; ack after success, let failures redeliver.

    One durable consumer per service: every instance of a kind shares it, so adding an
    instance adds capacity without any coordination.
    """
    subject = runtime.subjects.work(work_kind)
    stream = runtime.subjects.work_stream
    config = ConsumerConfig(durable_name=work_kind, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=ACK_WAIT_S, max_deliver=MAX_DELIVER)
    await runtime.js.add_consumer(stream, config)  # creates it, or updates an older one's ack wait
    sub = await runtime.js.pull_subscribe_bind(durable=work_kind, stream=stream)
    inflight: set[asyncio.Task] = set()
    try:
        await _pull_loop(runtime, work_kind, handle, concurrency, sub, inflight)
        await asyncio.gather(*inflight, return_exceptions=True)
    finally:
        await sub.unsubscribe()


async def _pull_loop(runtime: Runtime, work_kind: str, handle: WorkHandler, concurrency: int, sub, inflight: set) -> None:
    next_lag_check = 0.0
    while not runtime.stopping.is_set():
        if time.monotonic() >= next_lag_check:
            next_lag_check = time.monotonic() + LAG_CHECK_S
            await _report_lag(work_kind, sub)
        free = concurrency - len(inflight)
        if free <= 0:
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            continue
        try:
            msgs = await sub.fetch(batch=free, timeout=1.0)
        except (asyncio.TimeoutError, TimeoutError):
            continue
        except Exception as exc:  # reconnecting, consumer being recreated: try again shortly
            log.debug("fetch failed: %s", exc)
            await asyncio.sleep(0.2)
            continue
        for msg in msgs:
            task = asyncio.create_task(_handle_msg(runtime, work_kind, handle, msg))
            inflight.add(task)
            task.add_done_callback(inflight.discard)


async def _report_lag(work_kind: str, sub) -> None:
    """The queue's depth, for operators and autoscalers (every instance reports the same
    shared consumer: take the max across instances, not the sum)."""
    try:
        info = await sub.consumer_info()
    except Exception:  # reconnecting: the next check reports it
        return
    metrics.WORK_PENDING.labels(work_kind).set(info.num_pending)


async def _handle_msg(runtime: Runtime, work_kind: str, handle: WorkHandler, msg: Msg) -> None:
    metrics.BUS_MESSAGES.labels(f"work.{work_kind}", "in").inc()
    try:
        work = decode(msg.data)
    except ValueError as exc:
        log.error("dropping malformed %s work: %s", work_kind, exc)
        await msg.term()
        return
    if bus.deadline_passed(msg.headers):
        metrics.WORK_EXPIRED.labels(work_kind).inc()
        await msg.term()
        await _warn_expired(runtime, work_kind, work)
        return
    heartbeat = asyncio.create_task(_keep_in_progress(msg))
    sid, utterance = _ids_of(work)
    try:
        with telemetry.span(work_kind, (msg.headers or {}).get(bus.TRACEPARENT), sid=sid, utterance_id=utterance):
            await handle(work, msg)
        await msg.ack()
    except asyncio.CancelledError:
        # Cut at the drain deadline: hand the work back so another instance does it now,
        # not after the ack wait. Message ids make what we already published land once.
        await asyncio.shield(msg.nak())
        raise
    except Exception:
        log.exception("%s work failed; it will be redelivered", work_kind)
        metrics.WORK_FAILED.labels(work_kind).inc()
        await msg.nak(delay=0.5)
    finally:
        heartbeat.cancel()


async def _keep_in_progress(msg: Msg) -> None:
    """Long work (a turn waiting for a client's tool) is not redelivered while it runs."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await msg.in_progress()
        except Exception:  # disconnected: the next beat tries again
            pass


def _ids_of(work: object) -> tuple[str | None, str | None]:
    """(session id, utterance id) a unit of work is about, for its span and log lines."""
    match work:
        case AssistantTurn(sid=sid, utterance_id=utterance):
            return sid, utterance
        case TtsWork(utterance_id=utterance, speaker=speaker, recipients=recipients):
            return speaker or (recipients[0] if recipients else None), utterance
        case TranslateWork(utterance_id=utterance, speaker=speaker):
            return speaker, utterance
    return None, None


def _listeners_of(work: object) -> tuple[str, list[str]]:
    """(utterance id, session ids) of the clients waiting for a unit of work."""
    match work:
        case TtsWork(utterance_id=utterance, recipients=recipients):
            return utterance, list(recipients)
        case TranslateWork(utterance_id=utterance, listeners=listeners):
            return utterance, [listener.sid for listener in listeners]
        case AssistantTurn(utterance_id=utterance, sid=sid):
            return utterance, [sid]
    return "?", []


async def _warn_expired(runtime: Runtime, work_kind: str, work: object) -> None:
    utterance, recipients = _listeners_of(work)
    event = {
        "type": "warning",
        "code": "deadline_exceeded",
        "message": f"{work_kind} for utterance {utterance} came too late and was dropped",
    }
    for sid in recipients:
        await bus.publish_event(runtime.js, runtime.subjects, sid, event)
