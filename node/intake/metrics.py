"""Counters of what arrives, kept by the receiver of each process (prometheus-client).

Exposed by ``/metrics`` of the web app in the same process (node.web.monitoring). With ``[node]
listener_processes`` > 1, the children's receivers count their own instances, which the serve
process does not see; the indexer's count (all processes) and everything read from the index
(jobs, outbox, journal) are node-wide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

STORE_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class IngestMetrics:
    """Instances and bytes received, the time from a received data set to its durable acknowledgement."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.instances = Counter("myonode_instances_received", "Instances received and acknowledged (C-STORE, STOW-RS)",
                                 ["via"], registry=registry)
        self.bytes = Counter("myonode_bytes_received", "Bytes of the instances received", ["via"], registry=registry)
        self.refused = Counter("myonode_instances_refused", "Instances refused (unreadable, out of resources)",
                               ["via", "reason"], registry=registry)
        self.store_seconds = Histogram("myonode_store_seconds", "Seconds from a received instance to its durable "
                                       "acknowledgement (header check, journal write, fsync)", ["via"],
                                       buckets=STORE_SECONDS_BUCKETS, registry=registry)
        self.indexed = Counter("myonode_instances_indexed", "Journal entries indexed (from every listener process)",
                               registry=registry)
        self.set_aside = Counter("myonode_journal_set_aside", "Journal entries set aside as not indexable "
                                 "(since start)", registry=registry)
        self.indexer_restarts = Counter("myonode_indexer_restarts", "Times the indexer loop failed and was started "
                                        "again", registry=registry)
