"""Prometheus metrics at ``/metrics`` and a health check at ``/healthz``.

What the receiver counts as it goes (``node.intake.metrics``: instances, bytes, refusals, the
store latency histogram) sits beside what is read from the index at each scrape by
:class:`NodeCollector`: jobs by state, outbox depth and the age of its oldest pending item,
journal entries waiting and set aside, associations active and refused, the disk free under
the store, and the processing duration of finished jobs as a histogram.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from node.web.access import Access, RouteSpec, WebContext
from storage import models as m

log = logging.getLogger(__name__)

PROCESSING_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
ANYONE = Access(role=None)


class NodeCollector(Collector):
    """Gauges and counters read from the index and the process at scrape time."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        jobs = GaugeMetricFamily("myonode_jobs", "Jobs by state", labels=["state"])
        outbox = GaugeMetricFamily("myonode_outbox_items", "Outbox items by state", labels=["state"])
        with ctx.sessions() as s:
            counts = dict(s.execute(select(m.Job.state, func.count()).group_by(m.Job.state)).all())
            for state in m.JobState:
                jobs.add_metric([state.value], counts.get(state, 0))
            depth = dict(s.execute(select(m.OutboxItem.state, func.count()).group_by(m.OutboxItem.state)).all())
            for ostate in m.OutboxState:
                outbox.add_metric([ostate.value], depth.get(ostate, 0))
            oldest = s.scalar(select(func.min(m.OutboxItem.created_at))
                              .where(m.OutboxItem.state == m.OutboxState.PENDING))
            durations: list[float] = [(f - st).total_seconds() for st, f in s.execute(
                select(m.Job.started_at, m.Job.finished_at).where(m.Job.state == m.JobState.DONE))
                if st is not None and f is not None]  # a job per visit: some 600 rows a year
            instances = s.scalar(select(func.coalesce(func.sum(m.Series.n_instances), 0))) or 0  # kept per series
        yield jobs
        yield outbox
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily("myonode_outbox_oldest_pending_seconds", "Age of the oldest pending outbox item",
                                value=age)
        buckets: list[tuple[str, float]] = [(str(b), float(sum(1 for d in durations if d <= b)))
                                            for b in PROCESSING_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        total = float(sum(durations))
        yield HistogramMetricFamily("myonode_processing_seconds", "Duration of finished jobs (visit processing)",
                                    buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("myonode_instances_stored", "Instances in the index", value=instances)
        journal = ctx.receiver.journal
        yield GaugeMetricFamily("myonode_journal_pending", "Instances acknowledged, not yet indexed",
                                value=len(journal.pending()))
        yield GaugeMetricFamily("myonode_journal_oldest_pending_seconds", "How long the oldest acknowledged instance "
                                "not yet indexed has waited (the indexer's liveness)", value=journal.oldest_pending_age_s())
        yield GaugeMetricFamily("myonode_journal_failed", "Journal entries set aside as not indexable",
                                value=len(journal.failures()))
        yield GaugeMetricFamily("myonode_associations_active", "DICOM associations open (this process)",
                                value=ctx.active_associations())
        yield CounterMetricFamily("myonode_associations_refused", "DICOM associations refused (this process)",
                                  value=len(ctx.refused))
        failures = CounterMetricFamily("myonode_sign_in_failures", "Failed sign-ins (basic: DICOMweb credentials, "
                                       "form: the console), and attempts turned away while throttled (429)",
                                       labels=["via"])
        for via, count in ctx.sign_in_failures.items():
            failures.add_metric([via], count)
        yield failures
        disk = shutil.disk_usage(ctx.store.root)
        yield GaugeMetricFamily("myonode_disk_free_bytes", "Free space under the store root", value=disk.free)


def routes(ctx: WebContext) -> list[RouteSpec]:
    registry: CollectorRegistry = ctx.registry
    registry.register(NodeCollector(ctx))

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        problems = await run_in_threadpool(health, ctx)
        return JSONResponse({"status": "fail" if problems else "ok", **problems}, status_code=503 if problems else 200)

    return [("/metrics", metrics, ["GET"], ANYONE), ("/healthz", healthz, ["GET"], ANYONE)]


def health(ctx: WebContext) -> dict[str, str]:
    """What is wrong with the node, in words fit for anyone (a load balancer, a monitor): details go to the log."""
    problems = {}
    try:
        with ctx.sessions() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # any failure of the database makes the node unhealthy
        log.error("health check: the database failed: %s: %s", exc.__class__.__name__, exc)
        problems["database"] = "unreachable (see the node's log)"
    if shutil.disk_usage(ctx.store.root).free < 100 * 1024 * 1024:
        problems["disk"] = "less than 100 MB free under the store"
    age = ctx.receiver.journal.oldest_pending_age_s()
    if age > ctx.settings.storage.journal_alert_s:
        problems["index"] = (f"an acknowledged instance has waited {age:.0f} s to be indexed "
                             f"(more than [storage] journal_alert_s = {ctx.settings.storage.journal_alert_s:g})")
    return problems


