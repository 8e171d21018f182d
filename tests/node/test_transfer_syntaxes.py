"""Compressed and deflated instances from dcmtk are stored as sent and decode to the original pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select

from node.service import Node
from storage import models as m
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import write_series

# (dcmtk converter and arguments, expected transfer syntax UID, storescu option proposing it)
CONVERSIONS = {
    "jpeg_lossless_sv1": (("dcmcjpeg", "+e1"), "1.2.840.10008.1.2.4.70", "-xs"),
    "jpeg_ls_lossless": (("dcmcjpls", "+el"), "1.2.840.10008.1.2.4.80", "-xt"),
    "deflated": (("dcmconv", "+td"), "1.2.840.10008.1.2.1.99", "-xd"),
    "implicit_le": (("dcmconv", "+ti"), "1.2.840.10008.1.2", "-xi"),
}


@pytest.mark.parametrize("name", sorted(CONVERSIONS))
def test_store_transfer_syntax(node: Node, tmp_path: Path, name: str) -> None:
    (tool, *args), uid, propose = CONVERSIONS[name]
    source = write_series(tmp_path / "in", 1, size=64)[0]
    converted = tmp_path / f"{name}.dcm"
    out = dcmtk(tool, *args, str(source), str(converted))
    assert out.returncode == 0, out.stdout
    assert str(dcmread(converted).file_meta.TransferSyntaxUID) == uid
    sent = dcmtk("storescu", propose, "-R", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 str(converted))
    assert sent.returncode == 0, sent.stdout
    node.settle()
    with node.sessions() as s:
        row = s.scalars(select(m.Instance)).one()
    assert row.transfer_syntax_uid == uid
    stored = dcmread(node.store.absolute(row.file_path))
    assert np.array_equal(stored.pixel_array, dcmread(source).pixel_array)
