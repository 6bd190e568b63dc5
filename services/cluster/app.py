"""The faust-streaming app of the cluster service: one agent on ``rfr.matches.v1``, timers for retention and gauges.

* The agent reads raw records (bytes: the wire format is the project's JSON, decoded by
  :class:`~services.cluster.handler.ClusterHandler`), one at a time (``concurrency=1``). The domain step blocks
  (SQL, Milvus), so it runs in a worker thread (``asyncio.to_thread``), never on the event loop. Its outputs (the
  cluster event, key ``cluster_id``, header ``rfr-event-id``; or a dead letter) are produced and their broker
  acknowledgements awaited, and only then is the record acked (the stream is ``noack``: the agent acks
  explicitly), so faust may commit its offset: a crash or a shutdown anywhere before re-delivers the record,
  which the idempotent step absorbs.
* A dependency outage (Milvus, the store, Kafka) is retried with exponential backoff for as long as it lasts; any
  other failure ``stream.max_attempts`` times, then the record is dead-lettered (``retry_exhausted``) and the
  partition flows.
* Timers: the retention pass (every ``retention.interval_s``, on the leader only) and the store gauges (every
  :data:`GAUGE_INTERVAL_S`). A start-up task repairs the index and runs a first retention pass. Each pass then
  publishes the events it put into the store's outbox (:mod:`rfr.cluster.outbox`: a reported cluster shrunk or
  emptied by retention), oldest first, each batch deleted once the broker acknowledged it; what a failure leaves
  waits for the next pass. Before a cluster event of its own, the agent publishes what waits there for that cluster
  (a failure is then an outage it retries), so one worker publishes a cluster's revisions in order; readers still
  keep the highest revision (several workers, or a pass committing after the agent, may interleave them).

No faust tables: the state is in SQL (rfr/cluster/store.py), because faust's table recovery over the local Tansu
broker cannot be trusted (docs/design.md, "Repeat unknown offenders"). Every topic faust needs is created before
start (:func:`faust_topics`), ``topic_allow_declare`` is off.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from rfr.cluster import outbox
from rfr.cluster.clusterer import Clusterer
from rfr.cluster.index import IndexUnavailableError
from rfr.core.db import STORE_OUTAGES
from rfr.core.kafka import EVENT_ID_HEADER, Output, group_id
from rfr.core.metrics import StageMetrics
from rfr.core.reasons import Reason
from rfr.core.schemas import utcnow
from rfr.core.settings import KafkaSettings, Settings
from rfr.core.stream import DependencyUnavailable, PoisonMessage
from rfr.core.topics import Topics, TopicSpec
from services.cluster.handler import ClusterHandler, RawMessage, store_unavailable
from services.cluster.metrics import ClusterMetrics

logger = logging.getLogger(__name__)

GROUP = "rfr-cluster"
GAUGE_INTERVAL_S = 15.0
PASS_OUTAGES: tuple[type[Exception], ...] = (IndexUnavailableError, *STORE_OUTAGES)
"""Failures that skip a repair or retention pass (the next one retries)."""
KAFKA_OUTAGES: tuple[type[Exception], ...] = (KafkaError, ProducerSendError)
"""The broker failing a send: faust wraps the client's KafkaError raised while queueing as ProducerSendError."""
PUBLISH_FAILURES: tuple[type[Exception], ...] = (*KAFKA_OUTAGES, DependencyUnavailable)
"""What stops a publication of the outbox after a pass (:func:`drain_outbox` raises them; the next pass goes on)."""
Send = Callable[[list[Output]], Awaitable[None]]
"""Produces outputs and waits for the broker's acknowledgement of each (:func:`wire`)."""


@dataclass
class Runtime:
    """What the agent and timers use: the settings, the domain objects, the metrics; ``outbox_lock``: one publisher
    of the outbox at a time in this process."""

    settings: Settings
    clusterer: Clusterer
    handler: ClusterHandler
    metrics: ClusterMetrics
    stage: StageMetrics
    outbox_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def app_id(kafka: KafkaSettings) -> str:
    """The faust app id, which is also its consumer group (``<group namespace>.rfr-cluster``)."""
    return group_id(kafka, GROUP)


def faust_topics(kafka: KafkaSettings) -> list[TopicSpec]:
    """Topics faust needs beyond the pipeline's: its leader-election topic (one partition)."""
    return [TopicSpec(f"{app_id(kafka)}-__assignor-__leader", 1, kafka.replication_factor)]


def _credentials(kafka: KafkaSettings) -> Any:
    """faust's form of the client security settings (None: PLAINTEXT)."""
    context = ssl.create_default_context() if kafka.security_protocol.endswith("SSL") else None
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(username=kafka.sasl_username, password=password,
                                     mechanism=kafka.sasl_mechanism or "PLAIN", ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def make_app(settings: Settings) -> faust.App:
    """The faust app for ``settings`` (nothing started: :func:`wire` adds the agent and timers)."""
    kafka = settings.kafka
    return faust.App(
        app_id(kafka), broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(kafka), broker_client_id=kafka.client_id,
        processing_guarantee="at_least_once", topic_allow_declare=False,
        topic_replication_factor=kafka.replication_factor, topic_partitions=kafka.partitions,
        web_bind="127.0.0.1", web_port=settings.cluster.web_port, web_host="127.0.0.1",
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_max_poll_interval=kafka.max_poll_interval_ms / 1000, consumer_auto_offset_reset="earliest",
        producer_acks=-1, producer_max_request_size=kafka.message_max_bytes,
        consumer_max_fetch_size=max(kafka.message_max_bytes, 1_048_576),
        datadir=str((settings.stack.state_dir / "cluster-faust").resolve()))


def wire(app: faust.App, rt: Runtime) -> None:
    """Add the agent on the candidate lists, the timers and the start-up task to ``app``."""
    topics = Topics.from_settings(rt.settings.kafka)
    source = app.topic(topics.matches, key_serializer="raw", value_serializer="raw")
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
             for name in (topics.clusters, topics.cluster_purges, topics.deadletter)}

    async def send(outputs: list[Output]) -> None:
        for out in outputs:
            headers = [(k, v.encode()) for k, v in out.headers.items()]
            if out.event_id:
                headers.append((EVENT_ID_HEADER, out.event_id.encode()))
            key = out.key.encode() if isinstance(out.key, str) else out.key
            pending = await sinks[out.topic].send(key=key, value=out.value, headers=headers)
            await pending  # the broker's acknowledgement (acks=all)

    @app.agent(source, concurrency=1, name=f"{GROUP}.unknown-faces")
    async def unknown_faces(stream: faust.StreamT[bytes]) -> None:
        # noack: faust would otherwise ack a record when the loop leaves it for any reason, a cancelled task on
        # shutdown included (the generator's `finally`); here only a record whose outputs are acknowledged is.
        records = cast(faust.Stream[bytes], stream).noack()
        async for event in records.events():
            msg = event.message
            raw = RawMessage(msg.topic, msg.partition, msg.offset, msg.key, msg.value, list(msg.headers or []))
            await process(rt, raw, send)
            await records.ack(event)

    @app.timer(interval=rt.settings.retention.interval_s, on_leader=True)
    async def retention() -> None:
        await retention_pass(rt, send)

    @app.timer(interval=GAUGE_INTERVAL_S)
    async def gauges() -> None:
        await update_gauges(rt)

    @app.task
    async def on_start() -> None:
        try:
            added = await asyncio.to_thread(rt.clusterer.repair_index)
            if added:
                logger.warning("index repair: %d sighting(s) re-added to the unknown-face index", added)
        except PASS_OUTAGES as exc:
            logger.warning("index repair skipped: %s", exc)
        await retention_pass(rt, send)
        await update_gauges(rt)


async def process(rt: Runtime, msg: RawMessage, send: Callable[[list[Output]], Any]) -> list[Output]:
    """Handle one record until its outputs are acknowledged (see the module doc); returns them."""
    stage, stream = rt.stage, rt.settings.stream
    stage.consumed.inc()
    stage.inflight.set(1)
    started = time.perf_counter()
    backoff, attempts = stream.retry_backoff_s, 0
    dead: Output | None = None
    while True:
        try:
            outputs = [dead] if dead is not None else await asyncio.to_thread(rt.handler.handle, msg)
            mine = {str(out.key) for out in outputs if out.topic == rt.handler.topics.clusters}
            if mine:
                await drain_outbox(rt, send, keys=mine)  # the cluster's earlier revisions first
            await send(outputs)
            break
        except DependencyUnavailable as exc:
            stage.dependency_retries.labels(exc.dependency).inc()
            logger.warning("%s; retrying in %.1fs", exc, backoff)
        except KAFKA_OUTAGES as exc:
            stage.dependency_retries.labels("kafka").inc()
            logger.warning("kafka: %s; retrying in %.1fs", exc, backoff)
        except Exception as exc:
            attempts += 1
            stage.errors.labels(type(exc).__name__).inc()
            logger.exception("%s[%s]@%s failed (try %d of %d)", msg.topic(), msg.partition(), msg.offset(), attempts,
                             stream.max_attempts)
            if attempts >= stream.max_attempts:
                detail = f"{stream.max_attempts} tries: {type(exc).__name__}: {exc}"
                dead = rt.handler.dead_letter(msg, PoisonMessage(Reason.RETRY_EXHAUSTED, detail))
                continue
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, stream.max_backoff_s)
    for out in outputs:
        stage.produced.labels(out.topic).inc()
        if out.topic != rt.handler.topics.deadletter:
            rt.metrics.reported.inc()
    stage.batch_size.observe(1)
    stage.process_seconds.observe(time.perf_counter() - started)
    stage.inflight.set(0)
    stage.last_commit.set_to_current_time()  # durable in the store; faust commits the offset shortly after
    return outputs


async def retention_pass(rt: Runtime, send: Send) -> None:
    """One retention pass, then the outbox's events published (failures are logged; the next pass retries)."""
    before = utcnow() - timedelta(days=rt.settings.retention.no_candidate_days)
    try:
        report = await asyncio.to_thread(rt.clusterer.purge, before)
        rt.metrics.purged.inc(report.sightings)
    except PASS_OUTAGES as exc:
        logger.warning("retention pass failed, next one retries: %s", exc)
    await publish_outbox(rt, send)


async def publish_outbox(rt: Runtime, send: Send, batch: int = 100) -> int:
    """:func:`drain_outbox` after a retention pass: a broker or store failure stops it (logged), and the next pass
    or cluster event goes on from the first event not deleted. Returns how many were published."""
    try:
        return await drain_outbox(rt, send, batch)
    except PUBLISH_FAILURES as exc:
        logger.warning("retention events not all published, the next pass goes on: %s", exc)
        return 0


async def drain_outbox(rt: Runtime, send: Send, batch: int = 100, keys: set[str] | None = None) -> int:
    """Publish the events waiting in the store's outbox (only those of the clusters ``keys``, when given), oldest
    first, deleting each batch once the broker has acknowledged it; returns how many. Raises one of
    :data:`KAFKA_OUTAGES`, or DependencyUnavailable for a store outage; what was not deleted stays (an event
    acknowledged but not deleted is published again: same ``event_id``)."""
    topics, store, done = rt.handler.topics, rt.clusterer.store, 0
    async with rt.outbox_lock:
        while True:
            try:
                waiting = await asyncio.to_thread(outbox.pending, store, batch, keys)
                if not waiting:
                    return done
                await send([Output(topics.name(e.topic), e.payload, key=e.key, event_id=e.event_id)
                            for e in waiting])
                await asyncio.to_thread(outbox.sent, store, [e.seq for e in waiting])
            except STORE_OUTAGES as exc:
                raise store_unavailable(exc) from exc
            done += len(waiting)
            rt.metrics.retention_events.inc(len(waiting))
            for e in waiting:
                rt.stage.produced.labels(topics.name(e.topic)).inc()


async def update_gauges(rt: Runtime) -> None:
    try:
        n_clusters, n_sightings = await asyncio.to_thread(rt.clusterer.store.counts)
        n_waiting = await asyncio.to_thread(outbox.waiting, rt.clusterer.store)
    except STORE_OUTAGES as exc:
        logger.warning("cluster gauges not updated: %s", exc)
        return
    rt.metrics.clusters_open.set(n_clusters)
    rt.metrics.sightings_held.set(n_sightings)
    rt.metrics.outbox_waiting.set(n_waiting)
