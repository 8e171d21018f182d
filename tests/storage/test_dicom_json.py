"""WADO-RS metadata from headers: the same DICOM JSON pydicom's ``to_json_dict`` gives, on every file of pydicom's
test data (files nobody here wrote), the pixel data named by URI and never read; the per-series cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from storage.dicom_json import MetadataCache, header_json, read_header, with_pixel_uri

URL = "http://node/dicomweb/studies/1/series/2/instances/3"


def pydicoms_own(path: str) -> dict:
    """pydicom's to_json_dict of the same header, the pixel data element added by URI as header_json names it."""
    ds, pixel = read_header(path)
    out = ds.to_json_dict(bulk_data_threshold=0, bulk_data_element_handler=lambda e: f"{URL}/bulkdata/{e.tag:08X}")
    return with_pixel_uri(out, pixel, URL)


def test_every_pydicom_test_file_gets_the_json_pydicom_gives() -> None:
    compared, unencodable = 0, []
    for path in get_testdata_files("*.dcm"):
        try:
            expected = pydicoms_own(path)
        except Exception as exc:  # deliberately broken test files pydicom itself cannot encode
            unencodable.append(f"{Path(path).name}: {exc.__class__.__name__}")
            continue
        assert json.dumps(header_json(path, URL), sort_keys=True) == json.dumps(expected, sort_keys=True), path
        compared += 1
    assert compared > 60 and len(unencodable) < 10, unencodable


def test_the_pixel_data_is_named_by_uri_and_never_read(tmp_path: Path) -> None:
    (path,) = [p for p in get_testdata_files("MR_small.dcm")]
    data = Path(path).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:data.rfind(b"\xe0\x7f\x10\x00") + 12])  # the pixel data's header, none of its value
    out = header_json(cut, URL)
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{URL}/bulkdata/7FE00010"}


def test_the_cache_keeps_a_series_until_its_files_change_and_stays_within_its_size(tmp_path: Path) -> None:
    files = sorted(Path(p) for p in get_testdata_files("MR_small.dcm") + get_testdata_files("CT_small.dcm"))
    cache = MetadataCache(tmp_path / "cache", max_bytes=1 << 20)
    listing = [(files[0], "/studies/1/series/2/instances/a"), (files[1], "/studies/1/series/2/instances/b")]
    text = cache.series("2", listing)
    assert json.loads(f"[{text}]")[1]["00080018"]  # both instances, in order
    (kept,) = (tmp_path / "cache").glob("*.json")
    assert cache.series("2", listing) == text
    assert cache.series("2", listing[:1], whole=False) != text  # one instance asked for: not kept over the series
    assert list((tmp_path / "cache").glob("*.json")) == [kept]
    cache.series("2", listing[:1])  # the series lost an instance: made again, the older text dropped
    assert [p.name for p in (tmp_path / "cache").glob("*.json")] != [kept.name]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    small = MetadataCache(tmp_path / "small", max_bytes=len(text.encode()) + 10)
    small.series("a", listing)
    small.series("b", listing)  # over the size: the older series goes
    assert len(list((tmp_path / "small").glob("*.json"))) == 1


@pytest.mark.parametrize("max_bytes", [0])
def test_a_cache_of_size_zero_keeps_nothing(tmp_path: Path, max_bytes: int) -> None:
    (path,) = get_testdata_files("MR_small.dcm")
    MetadataCache(tmp_path / "none", max_bytes=max_bytes).series("2", [(Path(path), "/studies/1/series/2/instances/a")])
    assert not (tmp_path / "none").exists()
