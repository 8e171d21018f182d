"""WADO-RS frames in the form the client's Accept header allows: as stored or native, 1-bit frames packed,
float pixel data as it is — decided from pydicom's own test files (a real SEG, JPEG 2000, RLE, big endian)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pack_bits, unpack_bits
from pydicom.uid import JPEG2000, ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless

from node.web.frames import BadFrameRequest, NotAcceptable, check_frame_numbers, choose, frame_bytes, parse_frame_list

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def real(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    return dcmread(path)


@pytest.mark.parametrize(("accept", "stored", "as_stored", "content_type"), [
    ("", ExplicitVRLittleEndian, True, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
    (OHIF_ACCEPT, JPEG2000, True, f"image/jp2; transfer-syntax={JPEG2000}"),
    (OHIF_ACCEPT, ExplicitVRLittleEndian, True, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
    ('multipart/related; type="application/octet-stream"', JPEG2000, False,
     f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
    ("multipart/related; type=image/jp2", JPEG2000, True, f"image/jp2; transfer-syntax={JPEG2000}"),
    ("multipart/related; type=image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5", RLELossless, True,
     f"image/dicom-rle; transfer-syntax={RLELossless}"),
    ("multipart/related; type=image/jls; q=0.9, multipart/related; type=application/octet-stream", JPEG2000, False,
     f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
    ("*/*", ExplicitVRBigEndian, False, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"),
])
def test_the_accept_header_chooses_frames_as_stored_or_native(accept, stored, as_stored, content_type) -> None:
    offer = choose(accept, stored)
    assert (offer.as_stored, offer.content_type) == (as_stored, content_type)


@pytest.mark.parametrize("accept", ["multipart/related; type=image/jls", "application/dicom+json",
                                    "multipart/related; type=application/octet-stream; q=0",
                                    "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2"])
def test_a_form_that_cannot_be_given_is_not_acceptable_and_says_what_can(accept: str) -> None:
    with pytest.raises(NotAcceptable, match=r"application/octet-stream.*or image/jp2"):
        choose(accept, JPEG2000)


def test_a_real_segmentation_frame_is_served_packed_eight_pixels_a_byte() -> None:
    seg = real("liver_1frame.dcm")
    (frame,) = frame_bytes(seg, [1], choose(OHIF_ACCEPT, ExplicitVRLittleEndian))
    assert len(frame) == 512 * 512 // 8
    assert np.array_equal(unpack_bits(frame, as_array=True).reshape(512, 512), seg.pixel_array)


def test_one_bit_frames_that_do_not_start_on_a_byte_are_packed_each_on_its_own() -> None:
    frames = np.array([np.eye(3, dtype=np.uint8), 1 - np.eye(3, dtype=np.uint8), np.ones((3, 3), np.uint8)])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows = ds.Columns = 3
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 1, 1, 1, 0
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = pack_bits(frames.ravel())  # 27 bits: frame 2 starts at bit 9
    out = frame_bytes(ds, [2, 3], choose(OHIF_ACCEPT, ExplicitVRLittleEndian))
    assert out == [pack_bits(frames[1].ravel()), pack_bits(frames[2].ravel())]


def test_float_pixel_data_frames_are_the_stored_floats() -> None:
    values = np.linspace(0.0, 3.0e-3, 2 * 4 * 5, dtype="<f4").reshape(2, 4, 5)  # an ADC map's mm2/s
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 4, 5, 2, 1, 32
    ds.FloatPixelData = values.tobytes()
    (second,) = frame_bytes(ds, [2], choose(OHIF_ACCEPT, ExplicitVRLittleEndian))
    assert np.array_equal(np.frombuffer(second, "<f4").reshape(4, 5), values[1])


def test_compressed_frames_are_the_stored_codestream_or_decoded_when_native_is_asked() -> None:
    j2k = real("JPEG2000.dcm")
    (stored,) = frame_bytes(j2k, [1], choose(OHIF_ACCEPT, JPEG2000))
    assert stored == next(generate_frames(j2k.PixelData, number_of_frames=1))
    assert stored[:4] == b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream
    (native,) = frame_bytes(j2k, [1], choose("", JPEG2000))
    assert native == j2k.pixel_array.astype("<" + j2k.pixel_array.dtype.str[1:]).tobytes()


def test_big_endian_pixels_come_out_little_endian() -> None:
    mr = real("MR_small_bigendian.dcm")
    (frame,) = frame_bytes(mr, [1], choose("", ExplicitVRBigEndian))
    assert np.array_equal(np.frombuffer(frame, "<i2").reshape(64, 64), mr.pixel_array)


@pytest.mark.parametrize(("text", "message"), [("0", "numbered 1 to 4"), ("5", "numbered 1 to 4"),
                                               ("1,x", "whole numbers")])
def test_frame_numbers_outside_the_instance_are_refused_with_its_range(text: str, message: str) -> None:
    with pytest.raises(BadFrameRequest, match=message):
        check_frame_numbers(parse_frame_list(text), 4)
