"""The one configuration file, ``settings.toml``, as validated pydantic models.

Loading order: the TOML file, then environment variables ``MYONODE_<SECTION>__<KEY>``
(e.g. ``MYONODE_NODE__PORT=11113``), then validation. ``MYONODE_CONFIG`` names the file;
``MYONODE_TEST_*`` variables belong to the test suite and are ignored here. Every unknown key or bad value
fails with a :class:`SettingsError` naming the key and the file (or the variable).
Relative paths, including SQLite database URLs, are resolved against the folder of the
settings file, so the service behaves the same whatever its working directory.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from quant.params import QuantParams, RegionParams
from storage.catalogue import PROFILE_MUSCLES, Group, ScanProfile

ENV_PREFIX = "MYONODE_"
CONFIG_ENV = "MYONODE_CONFIG"
TEST_ENV_PREFIX = "MYONODE_TEST_"  # reserved for the test suite (server URLs, required services)
DEFAULT_SETTINGS_NAME = "settings.toml"

# DICOM AE titles: 1-16 characters of the default character repertoire, no backslash,
# not all spaces (PS3.5 Table 6.2-1, VR AE).
AETitle = Annotated[
    str,
    StringConstraints(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]*$"),
]
Port = Annotated[int, Field(ge=1, le=65535)]


class SettingsError(ValueError):
    """A settings file or environment override is missing, unreadable or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    """The DICOM service: who we are, where we listen, whom we accept."""

    ae_title: AETitle = "MYONODE"
    bind_host: str = "127.0.0.1"
    port: Port = 11112
    allowed_calling_ae_titles: list[AETitle] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_verify_client: bool = False
    max_associations: int = Field(default=8, ge=1, le=256)
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=120.0, gt=0)
    network_timeout_s: float = Field(default=120.0, gt=0)
    max_pdu: int = Field(default=262144, ge=0, le=2**32 - 1)
    # one received instance (C-STORE, STOW-RS part): larger is refused (0xC000 / 409) and nothing kept;
    # a deflated one may inflate at most max_inflation_ratio times its size (a deflate bomb is refused)
    max_instance_bytes: int = Field(default=1 << 30, ge=1 << 16, le=1 << 40)
    max_inflation_ratio: float = Field(default=100.0, ge=2.0, le=100_000.0)
    accept: Literal["all"] | list[str] = Field(
        default="all", description='storage SOP classes accepted: "all", or a list of SOP Class UIDs or keywords'
    )

    # who takes C-STOREs: "dcmtk", the compiled receiver (node/dimse/dcmtk, built by make; pynetdicom where it
    # is not built, with the reason logged), or "pynetdicom"; Q/R, storage commitment, mixed: pynetdicom
    receiver: Literal["dcmtk", "pynetdicom"] = "dcmtk"
    # pynetdicom's association threads poll; 1.0 is its own interval (node/dimse/reactor.py)
    reactor_poll_ms: float = Field(default=0.2, gt=0, le=10)
    # processes accepting associations on the port (SO_REUSEPORT): serve itself and listener_processes - 1
    # `myonode listen` children; more than 1 spreads many associations over the cores
    listener_processes: int = Field(default=1, ge=1, le=16)

    @field_validator("allowed_hosts")
    @classmethod
    def _networks(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError as exc:
                raise ValueError(f"{host!r} is not an IP address or network (CIDR)") from exc
        return hosts

    @model_validator(mode="after")
    def _tls_pair(self) -> NodeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_verify_client and self.tls_ca is None:
            raise ValueError("tls_verify_client needs tls_ca")
        return self

    def host_allowed(self, address: str) -> bool:
        """True when ``address`` lies in one of ``allowed_hosts``."""
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_hosts)

    @field_validator("accept")
    @classmethod
    def _accept(cls, accept: str | list[str]) -> str | list[str]:
        from node.dimse.conformance import resolve_sop_class

        if accept == "all":
            return accept
        if not accept:
            raise ValueError('an empty list accepts nothing; use "all" or name the SOP classes')
        return [resolve_sop_class(name) for name in accept]


class StorageSettings(_Section):
    """Where DICOM files and the SQL index live, and what a re-sent instance with new content does."""

    root: Path = Path("var/store")
    database_url: str = "sqlite:///var/myonode.db"
    resend_policy: Literal["keep_first", "replace", "keep_both"] = "keep_both"
    # indexed journal entries are kept (as a second name of the stored file) this long, so that a start
    # after an index lost its last transactions re-indexes them (storage/journal.py)
    journal_keep_hours: float = Field(default=24.0, ge=0)
    # /healthz answers 503 when an acknowledged instance has waited this long to be indexed
    journal_alert_s: float = Field(default=120.0, gt=0)
    # the indexer waits for a push to pause, at most this long, before indexing it (node/intake/indexer.py)
    index_wait_s: float = Field(default=2.0, ge=0, le=60)

    @model_validator(mode="after")
    def _index_before_alert(self) -> StorageSettings:
        if self.index_wait_s >= self.journal_alert_s:
            raise ValueError(f"index_wait_s ({self.index_wait_s:g}) must be shorter than journal_alert_s "
                             f"({self.journal_alert_s:g}): /healthz would call every push a stalled indexer")
        return self

    @field_validator("database_url")
    @classmethod
    def _url(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from exc
        return url


class QueueSettings(_Section):
    """The Huey task queue: SQLite on this host, or Redis for workers elsewhere too.

    ``workers``: consumer threads inside ``myonode serve``; ``processes``: worker processes serve
    starts beside them (each ``myonode worker``, its own interpreter: processing then never holds
    the GIL the DICOM listener needs, and a 2-core machine uses both cores)."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    url: str = "sqlite:///var/queue.db"
    # the queue's name: nodes that share one Redis server (a research node beside a clinical one) need
    # different names, or each would run the other's jobs
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "myonode"
    workers: int = Field(default=2, ge=0, le=64)
    processes: int = Field(default=0, ge=0, le=16)

    @model_validator(mode="after")
    def _someone_works(self) -> QueueSettings:
        if self.workers + self.processes < 1:
            raise ValueError("workers and processes are both 0: no job would ever run")
        return self

    @model_validator(mode="after")
    def _scheme(self) -> QueueSettings:
        scheme = urlsplit(self.url).scheme
        wanted = {"sqlite": ("sqlite",), "redis": ("redis", "rediss", "unix")}[self.backend]
        if scheme not in wanted:
            raise ValueError(f"backend {self.backend!r} needs a URL starting with {wanted[0]}://, got {self.url!r}")
        return self


class SeriesRule(_Section):
    """Classifies a series as the protocol's T2, DWI, or Dixon water or fat images; all given conditions must match."""

    kind: Literal["t2", "dwi", "dixon_water", "dixon_fat"]
    description: str = Field(description="regex searched in SeriesDescription or ProtocolName (case-insensitive)")
    orientation: Literal["coronal", "axial", "sagittal"] | None = None
    scanning_sequence: str | None = Field(default=None, description="regex searched in ScanningSequence")
    image_type: str | None = Field(default=None, description="regex searched in the ImageType values joined by "
                                                             "backslashes (case-insensitive)")

    @field_validator("description", "scanning_sequence", "image_type")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return pattern


# What each [protocol] profile expects unless the settings say otherwise: how its series are recognised and how
# many stations make a complete exam (a leg protocol's DWI is optional: 0 stations required). Dixon water and fat
# images (optional everywhere) are known by their Image Type, as the vendors write it: Siemens DIXON\WATER and
# DIXON\FAT, Philips W and F, GE WATER and FAT.
_DIXON_RULES = (
    {"kind": "dixon_water", "description": "", "image_type": r"(^|\\)(WATER|W)(\\|$)"},
    {"kind": "dixon_fat", "description": "", "image_type": r"(^|\\)(FAT|F)(\\|$)"},
)
_LEG_RULES = (
    *_DIXON_RULES,
    {"kind": "t2", "description": r"T2|mese|multi.?echo|me.?se|se.?mc|t2.?map", "orientation": "axial"},
    {"kind": "dwi", "description": r"DWI|diff|resolve"},
)
PROFILE_DEFAULTS: dict[ScanProfile, dict[str, object]] = {
    ScanProfile.WHOLE_BODY: {
        "rules": [*_DIXON_RULES,
                  {"kind": "t2", "description": r"(WB|whole.?body).*T2|T2.*(WB|whole.?body)", "orientation": "coronal"},
                  {"kind": "dwi", "description": r"(WB|whole.?body).*(DWI|diff)|(DWI|diff).*(WB|whole.?body)"}],
        "t2_stations": 6, "dwi_stations": 8,
    },
    ScanProfile.LOWER_LIMBS: {"rules": list(_LEG_RULES), "t2_stations": 2, "dwi_stations": 0},
    ScanProfile.CALVES: {"rules": list(_LEG_RULES), "t2_stations": 1, "dwi_stations": 0},
}


class ProtocolSettings(_Section):
    """How the node recognises the protocol's series and decides an exam is complete.

    ``profile`` names what the protocol scans (``whole_body``, the paper's; ``lower_limbs``; ``calves``): it
    gives the defaults of ``rules``, ``t2_stations`` and ``dwi_stations`` (:data:`PROFILE_DEFAULTS`; any of them
    may still be set) and which catalogue muscles a visit can be measured in (the others are not covered)."""

    profile: ScanProfile = ScanProfile.WHOLE_BODY
    rules: list[SeriesRule]
    t2_stations: int = Field(ge=1, le=20)
    dwi_stations: int = Field(ge=0, le=20)
    # of a multi-echo T2 series, the echo nearest this echo time (ms) is the T2-weighted image (the paper's 80)
    t2_te_ms: float = Field(default=80.0, gt=0, le=1000)
    stable_age_s: float = Field(default=60.0, ge=0)
    incomplete_deadline_s: float = Field(default=6 * 3600.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        try:
            profile = ScanProfile(data.get("profile", ScanProfile.WHOLE_BODY))
        except ValueError:
            return data  # the field's own validation names the wrong value
        return {**PROFILE_DEFAULTS[profile], **data}

    @property
    def muscles(self) -> tuple[str, ...]:
        """The catalogue muscles this protocol's field of view holds."""
        return PROFILE_MUSCLES[self.profile]


class VisitWindow(_Section):
    """A visit label and the window of days since the subject's baseline that maps to it."""

    label: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$")]
    min_days: int = Field(ge=0)
    max_days: int = Field(ge=0)
    groups: list[Group] = Field(default_factory=lambda: [Group.PATIENT, Group.CONTROL])
    time_point_ids: list[str] = Field(
        default_factory=list, description="Clinical Trial Time Point ID (0012,0050) values that name this visit"
    )

    @model_validator(mode="after")
    def _ordered(self) -> VisitWindow:
        if self.max_days < self.min_days:
            raise ValueError(f"visit {self.label!r}: max_days {self.max_days} < min_days {self.min_days}")
        return self


class VisitSettings(_Section):
    """The visit schedule; the first visit is the baseline and starts at day 0."""

    windows: list[VisitWindow] = Field(
        default_factory=lambda: [
            VisitWindow(label="baseline", min_days=0, max_days=14, time_point_ids=["BASELINE", "V0"]),
            VisitWindow(label="m4", min_days=60, max_days=200, groups=[Group.PATIENT], time_point_ids=["M4", "V1"]),
            VisitWindow(label="m6", min_days=120, max_days=330, groups=[Group.CONTROL], time_point_ids=["M6"]),
            VisitWindow(label="m12", min_days=270, max_days=540, groups=[Group.PATIENT], time_point_ids=["M12", "V2"]),
        ]
    )

    @model_validator(mode="after")
    def _consistent(self) -> VisitSettings:
        labels = [w.label for w in self.windows]
        if not labels:
            raise ValueError("at least one visit (the baseline) is needed")
        if len(set(labels)) != len(labels):
            raise ValueError(f"visit labels must be unique, got {labels}")
        if self.windows[0].min_days != 0:
            raise ValueError(f"the first visit {labels[0]!r} is the baseline and must start at min_days = 0")
        for group in Group:
            spans = sorted((w.min_days, w.max_days, w.label) for w in self.windows if group in w.groups)
            for (_, hi, a), (lo, _, b) in itertools.pairwise(spans):
                if lo <= hi:
                    raise ValueError(f"visits {a!r} and {b!r} overlap for group {group.value!r}")
        return self

    @property
    def baseline(self) -> str:
        return self.windows[0].label

    def label_for_days(self, days: int, group: Group) -> str | None:
        """The visit whose window holds ``days`` since baseline for ``group``, or None."""
        for w in self.windows:
            if group in w.groups and w.min_days <= days <= w.max_days:
                return w.label
        return None

    def label_for_time_point(self, time_point_id: str) -> str | None:
        """The visit named by a Clinical Trial Time Point ID, or None."""
        key = time_point_id.strip().upper()
        for w in self.windows:
            if key == w.label.upper() or key in (t.upper() for t in w.time_point_ids):
                return w.label
        return None


class AtlasSettings(_Section):
    """Which atlas to propagate; empty path = the commands that start a node use the default atlas, built from
    phantom subjects on first use into the atlas cache (reproducibly: fixed seeds; phantom/default_atlas.py),
    and log that they do."""

    path: Path | None = None
    default_subjects: int = Field(default=3, ge=1, le=20)
    # where the console's "build a site atlas" writes (one folder per atlas id; `myonode atlas build --from-visits
    # --out` may write anywhere)
    site_dir: Path = Path("var/atlases")


_QUANT, _REGION = QuantParams(), RegionParams()  # the defaults live in quant.params, once


class QuantSettings(_Section):
    """How a visit is measured: erosion, registration grids, reference marrow per station, QC.

    The defaults are :class:`quant.params.QuantParams`'s; :meth:`params` hands the validated
    values to the pipeline."""

    erosion_mm: float = Field(default=_QUANT.erosion_mm, ge=0)
    min_voxels: int = Field(default=_QUANT.min_voxels, ge=1)
    small_roi_voxels: int = Field(default=_QUANT.small_roi_voxels, ge=1)
    registration_mm: float = Field(default=_QUANT.registration_mm, gt=0)
    label_mm: float = Field(default=_QUANT.label_mm, gt=0)
    grid_mm: float = Field(default=_QUANT.grid_mm, gt=0)
    iterations: int = Field(default=_QUANT.iterations, ge=10)
    # T2 station index (1 = head) → marrow key of the atlas, overriding the per-muscle default
    reference: dict[int, str] = Field(default_factory=dict)
    reference_range: tuple[float, float] = _QUANT.reference_range
    # regional refinement of the atlas's small parts (the hands), quant/regional.py
    refine_regions: bool = _QUANT.refine_regions
    region_margin_mm: float = Field(default=_REGION.margin_mm, gt=0)
    region_mm: float = Field(default=_REGION.spacing_mm, gt=0)
    region_grid_mm: float = Field(default=_REGION.grid_mm, gt=0)
    region_iterations: int = Field(default=_REGION.iterations, ge=10)
    # a multi-atlas (a site atlas): this many of its entries, the most similar, registered to each visit and fused
    # (quant/fusion.py); 0 or 1: its template and fused labels alone. Each entry adds one registration.
    fusion_entries: int = Field(default=_QUANT.fusion_entries, ge=0, le=30)
    qc_dir: Path = Path("var/qc")

    def params(self) -> QuantParams:
        """The pipeline's parameters from these settings."""
        return QuantParams(erosion_mm=self.erosion_mm, min_voxels=self.min_voxels,
                           small_roi_voxels=self.small_roi_voxels, registration_mm=self.registration_mm,
                           label_mm=self.label_mm, grid_mm=self.grid_mm, iterations=self.iterations,
                           reference=dict(self.reference), reference_range=self.reference_range,
                           refine_regions=self.refine_regions, fusion_entries=self.fusion_entries,
                           regions=RegionParams(margin_mm=self.region_margin_mm, spacing_mm=self.region_mm,
                                                grid_mm=self.region_grid_mm, iterations=self.region_iterations))


class Destination(_Section):
    """A DICOM peer (PACS) that myonode sends to."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]
    ae_title: AETitle
    host: str
    port: Port
    tls: bool = False


class ForwardSettings(_Section):
    """PACS destinations that receive every result, through the outbox."""

    destinations: list[Destination] = Field(default_factory=list)
    max_attempts: int = Field(default=20, ge=1)
    backoff_initial_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=3600.0, gt=0)

    @field_validator("destinations")
    @classmethod
    def _unique(cls, dests: list[Destination]) -> list[Destination]:
        names = [d.name for d in dests]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        return dests


class QRSettings(_Section):
    """C-MOVE destinations the Query/Retrieve SCP knows, by AE title, and the bounds of every query (C-FIND and
    QIDO-RS alike)."""

    move_destinations: list[Destination] = Field(default_factory=list)
    # more matches than this: C-FIND answers 0xA700, QIDO-RS without a limit 413 (page it with limit/offset)
    max_results: int = Field(default=10_000, ge=1, le=1_000_000)
    # database time one query may take: C-FIND answers 0xC000, QIDO-RS 400, saying so
    query_timeout_s: float = Field(default=5.0, gt=0, le=300)


class ScheduleSettings(_Section):
    """When the cohort statistics and report run (standard 5-field cron expression, local time)."""

    cohort_report: str = "30 2 * * *"

    @field_validator("cohort_report")
    @classmethod
    def _cron(cls, expr: str) -> str:
        if len(expr.split()) != 5 or not croniter.is_valid(expr):
            raise ValueError(f"{expr!r} is not a 5-field cron expression (minute hour day month weekday)")
        return expr


VisitData = Literal["imaging", "clinical", "ephys"]


def _all_visit_data() -> list[VisitData]:
    return ["imaging", "clinical", "ephys"]


class ReportSettings(_Section):
    """Where cohort reports are written, and which visits count as complete for them."""

    out: Path = Path("var/reports")
    require: list[VisitData] = Field(
        default_factory=_all_visit_data,
        description="a visit enters the statistics when these are in: processed imaging, imported clinical "
                    "and electrophysiology data",
    )
    send_pdf_to_pacs: bool = False
    # which measurements the statistics use: "all", "reviewed" (rejected ROIs and visits left out), or
    # "auto" — "reviewed" once any visit has a review decision, else "all"
    use: Literal["auto", "all", "reviewed"] = "auto"


class ReviewSettings(_Section):
    """Signing reviewed results: the Verifying Organization of a verified SR (empty: the node's AE title)."""

    organisation: str = Field(default="", max_length=64)


class WebSettings(_Section):
    """The web console, DICOMweb and /metrics (node/web): off the network unless bound elsewhere.

    ``session_secret`` signs the session cookie (empty: a random one is made once and kept in
    ``<storage root>/run/web-secret``, mode 0600). ``root_path``: the prefix a reverse proxy
    serves the console under (e.g. "/myonode"); behind one, set ``forwarded_allow_ips`` to the
    proxy's address so the client address in the audit log is the real one."""

    enabled: bool = True
    bind_host: str = "127.0.0.1"
    port: Port = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_secret: str = ""
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    root_path: str = ""
    forwarded_allow_ips: list[str] = Field(default_factory=list)
    # the address people and PACS reach the console at, as DICOMweb's RetrieveURL and BulkDataURI spell it
    # (e.g. "https://myonode.example.org/myonode"); empty: the bound address and port. Never the Host header.
    public_url: str = ""
    # one HTTP request body (a STOW-RS upload, spooled to disk as it streams in): larger is refused with 413
    max_request_bytes: int = Field(default=2 << 30, ge=1 << 16, le=1 << 42)
    # WADO-RS metadata kept per series under <storage root>/cache/metadata (storage.dicom_json): a viewer
    # opening a study reads no file; the oldest go beyond this size; 0 keeps none
    metadata_cache_mb: int = Field(default=1024, ge=0, le=1 << 20)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path {self.root_path!r} must start with / and not end with one")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url {self.public_url!r} must start with http:// or https://")
        return self

    def public_base_url(self) -> str:
        """``public_url`` without a trailing slash, or the bound address (this host's name when bound to every
        address), port and ``root_path``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.getfqdn() if self.bind_host in ("", "0.0.0.0", "::") else self.bind_host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}{self.root_path}"


class Settings(_Section):
    """All of settings.toml. ``base_dir`` is the folder relative paths were resolved against."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    protocol: ProtocolSettings = Field(default_factory=lambda: ProtocolSettings.model_validate({}))
    visits: VisitSettings = Field(default_factory=VisitSettings)
    atlas: AtlasSettings = Field(default_factory=AtlasSettings)
    quant: QuantSettings = Field(default_factory=QuantSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    qr: QRSettings = Field(default_factory=QRSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    source: Path | None = Field(default=None, exclude=True)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data with passwords in URLs replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["storage"]["database_url"] = mask_url(self.storage.database_url)
        data["queue"]["url"] = mask_url(self.queue.url)
        if self.web.session_secret:
            data["web"]["session_secret"] = "***"
        return data


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make relative file paths and SQLite URLs absolute against ``base``."""

    def path(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    def sqlite(url: str) -> str:
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            rest = url[len(prefix):]
            file, sep, query = rest.partition("?")
            return prefix + str((base / file).resolve()) + sep + query
        return url

    node = settings.node.model_copy(
        update={k: path(getattr(settings.node, k)) for k in ("tls_cert", "tls_key", "tls_ca")}
    )
    storage = settings.storage.model_copy(
        update={"root": path(settings.storage.root), "database_url": sqlite(settings.storage.database_url)}
    )
    queue = settings.queue.model_copy(update={"url": sqlite(settings.queue.url)})
    atlas = settings.atlas.model_copy(update={"path": path(settings.atlas.path), "site_dir": path(settings.atlas.site_dir)})
    report = settings.report.model_copy(update={"out": path(settings.report.out)})
    quant = settings.quant.model_copy(update={"qc_dir": path(settings.quant.qc_dir)})
    web = settings.web.model_copy(update={k: path(getattr(settings.web, k)) for k in ("tls_cert", "tls_key")})
    return settings.model_copy(
        update={"node": node, "storage": storage, "queue": queue, "atlas": atlas, "report": report, "quant": quant,
                "web": web}
    )


def _parse_env_value(raw: str) -> Any:
    """Read an environment value as a TOML value when it is one (numbers, booleans, arrays), else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Overlay ``MYONODE_SECTION__KEY`` variables onto ``data``; returns dotted key -> variable name."""
    origin: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or name.startswith(TEST_ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if len(parts) < 2 or not all(parts):
            raise SettingsError(
                f"environment variable {name}: expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. MYONODE_NODE__PORT"
            )
        target = data
        for part in parts[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise SettingsError(f"environment variable {name}: {part!r} is not a section")
            target = nested
        target[parts[-1]] = _parse_env_value(raw)
        origin[".".join(parts)] = name
    return origin


def _describe(exc: ValidationError, file: str, origin: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) if loc else "(top level)"
        where = next((f"environment variable {var}" for k, var in origin.items() if key.startswith(k)), file)
        if err["type"] == "extra_forbidden":
            what = "unknown section" if len(loc) == 1 else "unknown key (not a setting)"
            lines.append(f"{where}: [{loc[0]}] {'.'.join(loc[1:])}: {what}".replace("] :", "]:"))
            continue
        shown = "" if isinstance(err["input"], (dict, list)) else f" (got {err['input']!r})"
        lines.append(f"{where}: [{'.'.join(loc[:1])}] {'.'.join(loc[1:]) or key}: {err['msg']}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def find_settings_file(explicit: Path | None = None) -> Path:
    """``--config`` if given, else ``$MYONODE_CONFIG``, else ``./settings.toml``."""
    if explicit is not None:
        candidate = explicit
    elif os.environ.get(CONFIG_ENV):
        candidate = Path(os.environ[CONFIG_ENV])
    else:
        candidate = Path.cwd() / DEFAULT_SETTINGS_NAME
    if not candidate.is_file():
        raise SettingsError(f"settings file not found: {candidate} (use --config PATH or set {CONFIG_ENV})")
    return candidate.resolve()


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, override from the environment, validate and resolve the settings file."""
    file = find_settings_file(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{file}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{file}: not valid TOML: {exc}") from exc
    origin = _apply_env(data, dict(os.environ if environ is None else environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, str(file), origin)) from None
    return _resolve_paths(settings, file.parent).model_copy(update={"source": file})
