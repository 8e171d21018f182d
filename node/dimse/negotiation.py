"""Which transfer syntax the node accepts when a peer proposes several in one presentation context.

pynetdicom, as acceptor, takes the first syntax of *its own* list that the requestor also
proposed, whatever the requestor's order. One fixed list cannot serve both directions:

- a peer **storing** to us proposes the syntaxes it can send. The node stores bytes as
  received and never needs to decode, so it takes the peer's first choice: a PACS holding a
  JPEG 2000 file proposes [JPEG 2000, Explicit VR Little Endian] and, if we took the second,
  would have to decode (dcmtk ``storescu -R`` cannot and fails the transfer: "unable to
  convert dataset"). Orthanc likewise takes such files as proposed.
- a peer **retrieving** from us by C-GET proposes the syntaxes it can receive, taking the SCP
  role for the storage class. Its order is kept too (dcmtk ``getscu +xv`` asks for JPEG 2000
  lossless first, and gets the stored bytes or a lossless encoding, :mod:`node.dimse.transcode`),
  except that lossy syntaxes go after the native little-endian ones: the node never writes a
  lossy compression, so a lossy choice would fail every instance not stored lossy.

:func:`preferred` is the pure rule; :func:`handle_requested` (EVT_REQUESTED, before
negotiation starts) re-orders the acceptor's supported contexts of the proposed abstract
syntaxes for this association only, through pynetdicom's public
``assoc.acceptor.supported_contexts`` setter; each re-ordered context is built once and reused.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from node.dimse.conformance import is_lossy

log = logging.getLogger(__name__)


def preferred(proposed: Sequence[str], supported: Sequence[str], *, retrieving: bool) -> list[str]:
    """``supported`` re-ordered so that pynetdicom's first match is the syntax we want from ``proposed``.

    ``proposed``: the requestor's syntaxes for the abstract syntax, in its order (all its
    contexts for it, concatenated); ``retrieving``: the requestor takes the SCP role (C-GET).
    """
    allowed = set(supported)
    order = list(dict.fromkeys(ts for ts in proposed if ts in allowed))
    if retrieving:  # stable: the peer's order, lossy syntaxes last
        order.sort(key=is_lossy)
    return order + [ts for ts in supported if ts not in order]


@functools.lru_cache(maxsize=4096)
def _context(abstract_syntax: str, order: tuple[str, ...], scu_role: bool | None,
             scp_role: bool | None) -> PresentationContext:
    """A supported context in this order, built once: pynetdicom reads the acceptor's contexts, never changes
    them, and building one validates every UID in it (a scanner proposes the same few hundred each time)."""
    context = build_context(abstract_syntax, list(order))
    context.scu_role, context.scp_role = scu_role, scp_role
    return context


def handle_requested(event: Event) -> None:
    """EVT_REQUESTED: order this association's supported contexts by :func:`preferred` (never raises)."""
    try:
        assoc = event.assoc
        rq = assoc.requestor
        proposed: dict[str, list[str]] = {}
        for cx in rq.requested_contexts:
            proposed.setdefault(str(cx.abstract_syntax), []).extend(str(ts) for ts in cx.transfer_syntax)
        roles = {str(uid): item.scp_role for uid, item in rq.role_selection.items()}
        contexts: list[PresentationContext] = []
        for cx in assoc.acceptor.supported_contexts:
            asked = proposed.get(str(cx.abstract_syntax))
            if not asked or len(cx.transfer_syntax) < 2:
                contexts.append(cx)
                continue
            order = preferred(asked, [str(ts) for ts in cx.transfer_syntax],
                              retrieving=bool(roles.get(str(cx.abstract_syntax))))
            contexts.append(_context(str(cx.abstract_syntax), tuple(order), cx.scu_role, cx.scp_role))
        assoc.acceptor.supported_contexts = contexts
    except Exception:  # a failure here must not end the association: the default order stands
        log.exception("transfer syntax preference not applied")
