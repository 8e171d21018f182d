"""Transcoding on the way out: give each stored instance in a transfer syntax the peer accepted.

The rule (:func:`choose_syntax`, a pure decision): the stored syntax when the peer accepted
it; else, for uncompressed data, any little-endian syntax it accepted (pynetdicom converts
implicit ↔ explicit and inflates deflated data while encoding); else the pixel data is
decoded and the instance sent as Explicit (or Implicit) VR Little Endian; else, when the peer
accepted only a lossless compression pydicom can write (RLE, JPEG-LS lossless, JPEG 2000
lossless), it is encoded so. The node never writes a lossy compression, so lossless data is
never made lossy; lossy data decoded stays flagged lossy (Lossy Image Compression is kept as
received).

Decoding goes through pydicom's pixel handlers with the pylibjpeg plugins
(pylibjpeg-libjpeg: JPEG baseline/extended/lossless; pylibjpeg-openjpeg: JPEG 2000 and
HTJ2K; pyjpegls: JPEG-LS; pydicom's own RLE decoder). Chosen over python-gdcm because they
are pydicom's maintained plugins, are pinned in ``requirements.lock`` as wheels, and are the
same decoders the pipeline reads compressed stations with. Where they give up on a JPEG,
JPEG-LS or RLE stream that DCMTK reads (12-bit JPEG Extended with an odd scan header, seen
in old CT/NM files), DCMTK's own decoders (``dcmdjpeg``, ``dcmdjpls``, ``dcmdrle``, Debian
package dcmtk, the decoders Orthanc uses) are run on the stored file as a fallback: DCMTK has
no Python binding, so it is a subprocess, taken only when pydicom's plugins failed. What
neither can decode (video syntaxes, private compressions, damaged streams) raises
:class:`TranscodeError`, and only that sub-operation fails.
"""

from __future__ import annotations

import enum
import shutil
import subprocess
import tempfile
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
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

LITTLE_ENDIAN_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
DECODED_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Lossless compressions pydicom writes (its RLE encoder, pyjpegls, pylibjpeg-openjpeg), in order of preference.
LOSSLESS_TARGETS = (JPEG2000Lossless, JPEGLSLossless, RLELossless)
MAX_PROPOSED_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1-255


# What pydicom's pixel handlers raise for a syntax no installed plugin handles, or for bad pixel data.
PIXEL_HANDLER_ERRORS = (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, TypeError)


class Conversion(enum.Enum):
    """What is done to a stored instance before it is sent."""

    NONE = "none"  # the stored bytes' syntax (or another native little-endian one pynetdicom converts to)
    DECODE = "decode"  # pixel data decoded to native little endian
    ENCODE = "encode"  # pixel data (decoded if need be, then) encoded losslessly


class TranscodeError(ValueError):
    """An instance cannot be given in any transfer syntax the peer accepted."""


def choose_syntax(stored: str, accepted: Collection[str], *, has_pixels: bool = True) -> tuple[str, Conversion] | None:
    """(syntax to send, what is done to the pixel data), or None when nothing fits.

    ``accepted``: the transfer syntaxes the peer accepted for the instance's SOP class;
    ``has_pixels``: the instance has Pixel Data (without, any native syntax will do).
    """
    if stored in accepted:
        return stored, Conversion.NONE
    if stored in LITTLE_ENDIAN_NATIVE:
        native = next((ts for ts in LITTLE_ENDIAN_NATIVE if ts in accepted), None)
        if native is not None:
            return native, Conversion.NONE
    target = next((ts for ts in DECODED_TARGETS if ts in accepted), None)
    if target is not None:
        return target, Conversion.DECODE
    lossless = next((ts for ts in LOSSLESS_TARGETS if ts in accepted), None)
    if lossless is not None and has_pixels:
        return lossless, Conversion.ENCODE
    return None


def stored_syntax(ds: Dataset) -> str:
    """The transfer syntax an instance was stored in (Implicit VR Little Endian when it has no meta)."""
    meta = getattr(ds, "file_meta", None)
    return str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ImplicitVRLittleEndian


def decode_to(ds: Dataset, target: str, path: Path | None = None) -> Dataset:
    """``ds`` with native (uncompressed, little-endian) pixel data, labelled ``target``; raises TranscodeError.

    ``path``: the stored file ``ds`` was read from, for DCMTK's decoders when pydicom's fail.
    """
    source = UID(stored_syntax(ds))
    try:
        if "PixelData" in ds and source.is_encapsulated:
            # Keep the SOP Instance UID: this is the same instance, given in another syntax.
            ds.decompress(generate_instance_uid=False)
        elif source == ExplicitVRBigEndian:
            _big_to_little(ds)
    except PIXEL_HANDLER_ERRORS as exc:
        decoded = dcmtk_decode(path, source) if path is not None else None
        if decoded is None:
            raise TranscodeError(f"cannot decode {source.name} ({source}) pixel data: {exc}") from exc
        ds = decoded
    ds.file_meta.TransferSyntaxUID = UID(target)
    return ds


def _dcmtk_decoder(syntax: UID) -> str | None:
    """The DCMTK tool that decodes ``syntax`` (None: none does)."""
    if syntax.startswith("1.2.840.10008.1.2.4.") and syntax.rsplit(".", 1)[1] in {
            "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64", "65", "66",
            "70"}:
        return "dcmdjpeg"
    if syntax in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
        return "dcmdjpls"
    if syntax == "1.2.840.10008.1.2.5":
        return "dcmdrle"
    return None


def dcmtk_decode(path: Path, syntax: UID, timeout_s: float = 60.0) -> Dataset | None:
    """The stored file at ``path`` decoded by DCMTK to Explicit VR Little Endian; None when DCMTK is not
    installed, has no decoder for ``syntax`` or fails on the file."""
    tool = _dcmtk_decoder(syntax)
    binary = shutil.which(tool) if tool else None
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="myonode-decode-") as tmp:
        out = Path(tmp) / "decoded.dcm"
        # +ud: the same SOP Instance UID (the same instance in another syntax); +te: explicit little endian
        args = [binary, "+ud", "+te", str(path), str(out)]
        try:
            proc = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not out.is_file():
            return None
        return dcmread(out)


# Bytes per word of the binary VRs whose bytes follow the transfer syntax's byte order (PS3.5 7.3).
_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _big_to_little(ds: Dataset) -> None:
    """A data set read as Explicit VR Big Endian, made little endian throughout.

    pydicom decodes the text and number elements (so they re-encode in any byte order) but
    keeps binary values (OW, OF, OL, OD, OV) as the bytes read: those are swapped word by word
    here, the native pixel data through pydicom's reader (which knows Bits Allocated), and the
    data set's original encoding is set to little endian so pynetdicom encodes it as such.
    """
    for elem in ds.iterall():  # decodes every raw element while the data set still says big endian
        if elem.tag == 0x7FE00010 or elem.VR not in _WORD_BYTES or not isinstance(elem.value, bytes):
            continue
        width = _WORD_BYTES[elem.VR]
        elem.value = np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
    if "PixelData" in ds:
        arr = ds.pixel_array  # colour comes back pixel-interleaved, whatever the planar configuration was
        ds.PixelData = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
        if int(ds.get("SamplesPerPixel", 1)) > 1:
            ds.PlanarConfiguration = 0
    ds.set_original_encoding(False, True, ds.original_character_set)
    for item in _items(ds):
        item.set_original_encoding(False, True, item.original_character_set)


def _items(ds: Dataset) -> Iterable[Dataset]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield item
                yield from _items(item)


def for_peer(path: Path, accepted: Collection[str]) -> Dataset:
    """Read a stored file and return it ready for a peer that accepted ``accepted``; raises TranscodeError."""
    ds = dcmread(path)
    stored = stored_syntax(ds)
    choice = choose_syntax(stored, accepted, has_pixels="PixelData" in ds)
    if choice is None:
        raise TranscodeError(
            f"stored as {UID(stored).name}; the peer accepted only "
            f"{', '.join(UID(ts).name for ts in accepted) or 'nothing'} for this SOP class, "
            "and the node decodes only to explicit or implicit VR little endian and encodes only losslessly"
        )
    target, conversion = choice
    if conversion is Conversion.DECODE:
        return decode_to(ds, target, path)
    if conversion is Conversion.ENCODE:
        return encode_to(decode_to(ds, ExplicitVRLittleEndian, path), target)
    if target != stored:
        ds.file_meta.TransferSyntaxUID = UID(target)
    return ds


def encode_to(ds: Dataset, target: str) -> Dataset:
    """``ds`` (native pixel data) encoded losslessly in ``target``, same SOP Instance UID; raises TranscodeError."""
    syntax = UID(target)
    if syntax not in LOSSLESS_TARGETS:
        raise TranscodeError(f"the node does not encode {syntax.name}: only {', '.join(UID(t).name for t in LOSSLESS_TARGETS)}")
    try:
        ds.compress(syntax, generate_instance_uid=False)
    except PIXEL_HANDLER_ERRORS as exc:
        raise TranscodeError(f"cannot encode the pixel data as {syntax.name}: {exc}") from exc
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
