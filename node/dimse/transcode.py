"""Transcoding on the way out: give each stored instance in a transfer syntax the peer accepted.

The rule (:func:`choose_syntax`, a pure decision): the stored syntax when the peer accepted
it; else, for uncompressed data, any little-endian syntax it accepted (pynetdicom converts
implicit ↔ explicit and inflates deflated data while encoding); else the pixel data is
decoded and the instance sent as Explicit (or Implicit) VR Little Endian. The node never
compresses, so lossless data is never made lossy; lossy data decoded stays flagged lossy
(Lossy Image Compression is kept as received).

Decoding goes through pydicom's pixel handlers with the pylibjpeg plugins
(pylibjpeg-libjpeg: JPEG baseline/extended/lossless; pylibjpeg-openjpeg: JPEG 2000 and
HTJ2K; pyjpegls: JPEG-LS; pydicom's own RLE decoder). Chosen over python-gdcm because they
are pydicom's maintained plugins, are pinned in ``requirements.lock`` as wheels, and are the
same decoders the pipeline reads compressed stations with. What they cannot decode (video
syntaxes, private compressions) raises :class:`TranscodeError`, and only that sub-operation
fails.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

LITTLE_ENDIAN_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
DECODED_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_PROPOSED_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1-255


class TranscodeError(ValueError):
    """An instance cannot be given in any transfer syntax the peer accepted."""


def choose_syntax(stored: str, accepted: Collection[str]) -> tuple[str, bool] | None:
    """(syntax to send, whether the pixel data must be decoded), or None when nothing fits.

    ``accepted``: the transfer syntaxes the peer accepted for the instance's SOP class.
    """
    if stored in accepted:
        return stored, False
    if stored in LITTLE_ENDIAN_NATIVE:
        native = next((ts for ts in LITTLE_ENDIAN_NATIVE if ts in accepted), None)
        if native is not None:
            return native, False
    target = next((ts for ts in DECODED_TARGETS if ts in accepted), None)
    if target is None:
        return None
    return target, True


def stored_syntax(ds: Dataset) -> str:
    """The transfer syntax an instance was stored in (Implicit VR Little Endian when it has no meta)."""
    meta = getattr(ds, "file_meta", None)
    return str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ImplicitVRLittleEndian


def decode_to(ds: Dataset, target: str) -> Dataset:
    """``ds`` with native (uncompressed, little-endian) pixel data, labelled ``target``; raises TranscodeError."""
    source = UID(stored_syntax(ds))
    try:
        if "PixelData" in ds and source.is_encapsulated:
            # Keep the SOP Instance UID: this is the same instance, given in another syntax.
            ds.decompress(generate_instance_uid=False)
        elif "PixelData" in ds and source == ExplicitVRBigEndian:
            _big_to_little(ds)
    # What pydicom's pixel handlers raise for a syntax no installed plugin decodes, or bad pixel data.
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise TranscodeError(f"cannot decode {source.name} ({source}) pixel data: {exc}") from exc
    ds.file_meta.TransferSyntaxUID = UID(target)
    return ds


def _big_to_little(ds: Dataset) -> None:
    """Native big-endian pixel data as little-endian bytes (pydicom reads it with the right byte order)."""
    arr = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"


def for_peer(path: Path, accepted: Collection[str]) -> Dataset:
    """Read a stored file and return it ready for a peer that accepted ``accepted``; raises TranscodeError."""
    ds = dcmread(path)
    stored = stored_syntax(ds)
    choice = choose_syntax(stored, accepted)
    if choice is None:
        raise TranscodeError(
            f"stored as {UID(stored).name}; the peer accepted only "
            f"{', '.join(UID(ts).name for ts in accepted) or 'nothing'} for this SOP class, "
            "and the node decodes only to explicit or implicit VR little endian"
        )
    target, decode = choice
    if decode:
        return decode_to(ds, target)
    if target != stored:
        ds.file_meta.TransferSyntaxUID = UID(target)
    return ds


def proposal(instances: Iterable[tuple[str, str | None]]) -> list[PresentationContext]:
    """Contexts to propose for sending (SOP class, stored syntax) pairs: the native ones, then each stored one.

    Per SOP class one context with Explicit and Implicit VR Little Endian (what any peer can
    take, decoded if need be), then one context per compressed stored syntax on its own, so
    a peer that accepts it gets the stored bytes. At most 128 contexts (PS3.8); the
    compressed ones are left out first.
    """
    stored: dict[str, list[str]] = {}
    for sop, ts in instances:
        syntaxes = stored.setdefault(sop, [])
        ts = ts or ImplicitVRLittleEndian
        if ts not in syntaxes:
            syntaxes.append(ts)
    contexts = [build_context(sop, list(DECODED_TARGETS)) for sop in stored]
    for sop, syntaxes in stored.items():
        for ts in syntaxes:
            if ts not in DECODED_TARGETS and len(contexts) < MAX_PROPOSED_CONTEXTS:
                contexts.append(build_context(sop, [ts]))
    return contexts[:MAX_PROPOSED_CONTEXTS]


def accepted_syntaxes(assoc: Association, sop_class: str) -> set[str]:
    """Transfer syntaxes accepted on ``assoc`` for sending ``sop_class`` (contexts where we are the SCU).

    On a C-GET association that means the requestor took the SCP role for the class.
    """
    return {str(ts) for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu for ts in cx.transfer_syntax}
