"""Real scans nobody here made, fetched from the package registries at test time, hash-checked, cached outside
the repository (never committed):

- :func:`myoqmri_example_data`: the ``myoqmri==2.0.2`` source distribution (GPL-3.0) — a healthy volunteer's
  calves on a Siemens MAGNETOM Prisma 3 T (XA60): a 17-echo spin echo as Enhanced MR (one file per echo),
  the vendor's water-T2, fat-fraction and B1 maps, and a two-point Dixon;
- :func:`nibabel_dicom`: the DICOM files nibabel ships with its tests (a dependency of ours): two classic
  Siemens diffusion images (b 0 and b 1000, mosaic, CSA header) and a Philips MPRAGE.

Under ``make test`` (``MYONODE_TEST_REQUIRE`` names ``registry``) an unreachable registry fails the test, as an
unreachable PostgreSQL does; elsewhere it is skipped. A download whose SHA-256 differs always fails.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.volumes import StationVolume, station_volumes
from tests.support.peers import required

MYOQMRI = "myoqmri==2.0.2"
MYOQMRI_SHA256 = "dc3b012790b20f1d3ba207ca78b22deafd5375e8b3b1543782830c1c516b0cd1"


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "myonode" / "test-data"


def myoqmri_example_data() -> Path:
    """The ``example_data`` folder of the myoqmri sdist (downloaded once by pip, its SHA-256 checked)."""
    root = cache_root() / "myoqmri-2.0.2"
    done = root / ".complete"
    if done.is_file():
        return root / "myoqmri-2.0.2" / "example_data"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one downloads, the others wait
        if not done.is_file():
            _download_and_unpack(root)
    return root / "myoqmri-2.0.2" / "example_data"


def _download_and_unpack(root: Path) -> None:
    downloads = root / "download"
    archive = downloads / "myoqmri-2.0.2.tar.gz"
    if not archive.is_file():
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                              MYOQMRI, "-d", str(downloads)], check=False, capture_output=True, text=True,
                             timeout=600)
        if run.returncode != 0 or not archive.is_file():
            message = f"cannot fetch {MYOQMRI} from the package registry: {run.stderr.strip()[-400:]}"
            if required("registry"):
                pytest.fail(message)
            pytest.skip(message)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != MYOQMRI_SHA256:
        archive.unlink()
        pytest.fail(f"{archive}: SHA-256 {digest}, expected {MYOQMRI_SHA256} (deleted; the next run fetches it again)")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/example_data/" in m.name and (m.isfile() or m.isdir())]
        tar.extractall(root, members=members, filter="data")
    (root / ".complete").write_text(MYOQMRI_SHA256)


def mese_files() -> list[Path]:
    """The 17 echoes of the multi-echo spin echo (one Enhanced MR instance each, 8 axial slices)."""
    files = sorted((myoqmri_example_data() / "004_mese_product").glob("image*.dcm"))
    assert len(files) == 17, files
    return files


def nibabel_dicom(name: str) -> Dataset:
    """One of the DICOM files of nibabel's test data (gzip-compressed ones read through)."""
    import nibabel

    path = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / name
    if not path.is_file():
        pytest.fail(f"{path}: not in the installed nibabel (its wheel ships its test data)")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    from io import BytesIO

    return pydicom.dcmread(BytesIO(raw))


def dixon_volumes(series: str) -> list[StationVolume]:
    """The station volumes of a Dixon series of the myoqmri exam (e.g. ``016_dixon_2echo_RR_F``), its images read as
    the node reads them (Siemens marks Dixon images DERIVED)."""
    path = next((myoqmri_example_data() / "Dixon_enhanced" / series).glob("*.dcm"))
    return station_volumes([pydicom.dcmread(path)], derived=True)


def dixon_on(series: str, onto: sitk.Image) -> np.ndarray:
    """A Dixon series of the myoqmri exam (:func:`dixon_volumes`), resampled onto ``onto``'s grid through the frame
    of reference they share (linear), as an array (k, j, i)."""
    (volume,) = dixon_volumes(series)
    return sitk.GetArrayFromImage(sitk.Resample(volume.image, onto, sitk.Transform(), sitk.sitkLinear, 0.0))
