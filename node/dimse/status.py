"""DIMSE status codes by name (PS3.4 and PS3.7 Annex C), the only place the node spells them.

A leaf module: every room of :mod:`node` may read it (intake answers C-STORE with these
codes, work reads them off sub-operations). ``IntEnum`` so a member is the number pynetdicom
sends, and ``Status(code).name`` is what a log line says.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """The status values myonode sends or reads (aliases where two services share a number)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    # C-STORE (PS3.4 B.2.3)
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # C-FIND / C-GET / C-MOVE (PS3.4 C.4)
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    UNABLE_TO_PROCESS = 0xC000
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    # general (PS3.7 C)
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    NO_SUCH_ACTION_TYPE = 0x0123
