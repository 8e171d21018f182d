"""dcm2niix (the Debian package) as the reference reader of vendor headers: what it makes of a folder of DICOM."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True, kw_only=True)
class Converted:
    """One NIfTI dcm2niix wrote, with its sidecar and, for diffusion, its b-values."""

    nifti: Path
    sidecar: dict[str, object]
    b_values: list[float] | None

    def voxels_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """The voxel array (i, j, k[, t]) and its affine in DICOM patient coordinates (LPS, mm)."""
        import nibabel

        image = nibabel.load(str(self.nifti))
        to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # NIfTI is RAS
        return np.asarray(image.dataobj), to_lps @ image.affine


def dcm2niix(folder: Path, out: Path) -> list[Converted]:
    """Run ``dcm2niix -b y -z n`` on ``folder``; what it wrote, sorted by file name."""
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.fail("dcm2niix is not installed (make debs installs the Debian package)")
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([exe, "-b", "y", "-z", "n", "-f", "%s_%e", "-o", str(out), str(folder)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    converted = []
    for nifti in sorted(out.glob("*.nii")):
        bval = nifti.with_suffix(".bval")
        converted.append(Converted(nifti=nifti, sidecar=json.loads(nifti.with_suffix(".json").read_text()),
                                   b_values=[float(v) for v in bval.read_text().split()] if bval.exists() else None))
    assert converted, run.stdout
    return converted
