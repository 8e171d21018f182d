"""The pure rules of the way out: which syntax the node accepts from a proposer, and what it sends."""

from __future__ import annotations

import copy

import numpy as np
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.dimse.conformance import is_lossy
from node.dimse.negotiation import preferred
from node.dimse.transcode import Conversion, choose_syntax, encode_to
from tests.support.dicom_factory import CORONAL, mr_image

SUPPORTED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, JPEG2000Lossless, JPEG2000,
             JPEGBaseline8Bit, RLELossless]


def test_a_storing_peer_gets_its_first_choice_so_it_never_has_to_convert() -> None:
    assert preferred([JPEG2000, ExplicitVRLittleEndian], SUPPORTED, retrieving=False)[0] == JPEG2000
    assert preferred([ImplicitVRLittleEndian, ExplicitVRLittleEndian], SUPPORTED, retrieving=False)[0] \
        == ImplicitVRLittleEndian


def test_a_retrieving_peer_gets_its_order_but_lossy_last() -> None:
    assert preferred([JPEG2000Lossless, ExplicitVRLittleEndian], SUPPORTED, retrieving=True)[0] == JPEG2000Lossless
    assert preferred([JPEGBaseline8Bit, ExplicitVRLittleEndian], SUPPORTED, retrieving=True)[0] \
        == ExplicitVRLittleEndian
    order = preferred([JPEGBaseline8Bit, RLELossless, ExplicitVRLittleEndian], SUPPORTED, retrieving=True)
    assert order[:3] == [RLELossless, ExplicitVRLittleEndian, JPEGBaseline8Bit]
    assert sorted(order) == sorted(SUPPORTED)  # nothing lost or added


def test_lossy_means_compressed_and_not_known_lossless() -> None:
    assert is_lossy(JPEGBaseline8Bit) and is_lossy(JPEG2000)
    assert not is_lossy(JPEG2000Lossless) and not is_lossy(RLELossless) and not is_lossy(ExplicitVRLittleEndian)


def test_the_stored_bytes_go_when_accepted_else_decoded_else_encoded_losslessly() -> None:
    assert choose_syntax(JPEG2000, {JPEG2000, ExplicitVRLittleEndian}) == (JPEG2000, Conversion.NONE)
    assert choose_syntax(ImplicitVRLittleEndian, {ExplicitVRLittleEndian}) == (ExplicitVRLittleEndian, Conversion.NONE)
    assert choose_syntax(JPEG2000, {ImplicitVRLittleEndian}) == (ImplicitVRLittleEndian, Conversion.DECODE)
    assert choose_syntax(ExplicitVRLittleEndian, {RLELossless}) == (RLELossless, Conversion.ENCODE)
    assert choose_syntax(JPEGBaseline8Bit, {JPEG2000Lossless}) == (JPEG2000Lossless, Conversion.ENCODE)
    assert choose_syntax(ExplicitVRLittleEndian, {JPEGBaseline8Bit}) is None  # never made lossy
    assert choose_syntax(ExplicitVRLittleEndian, {JPEG2000Lossless}, has_pixels=False) is None


def test_lossless_encoding_keeps_the_instance_and_every_pixel() -> None:
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), orientation=CORONAL, size=64)
    before = ds.pixel_array.copy()
    uid = ds.SOPInstanceUID
    for syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        out = encode_to(copy.deepcopy(ds), syntax)
        assert out.file_meta.TransferSyntaxUID == syntax and out.SOPInstanceUID == uid
        np.testing.assert_array_equal(out.pixel_array, before)
