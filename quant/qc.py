"""QC pictures of a processed visit: propagated muscle ROIs over the T2 and the DWI, with names.

``t2_mosaic`` shows coronal planes of the stitched T2 at several depths (head at the top,
patient's right on the left as radiologists view it); ``dwi_mosaic`` shows the middle axial
slice of every DWI station. Each ROI is tinted in its colour, outlined, and named at its
centre. A small thumbnail of the T2 mosaic goes into the cohort report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.colors import ListedColormap
from scipy import ndimage

from quant.atlas import AtlasLabel


@dataclass(frozen=True, kw_only=True)
class QcPictures:
    t2: Path
    dwi: Path | None
    thumbnail: Path


def _colours(labels: Sequence[AtlasLabel]) -> ListedColormap:
    """A fixed colour per muscle label (tab20 cycled), transparent elsewhere."""
    table = np.zeros((256, 4))
    cmap = plt.get_cmap("tab20")
    for i, lab in enumerate(sorted((lab for lab in labels if lab.is_muscle), key=lambda lab: lab.value)):
        table[lab.value] = (*cmap(i % 20)[:3], 0.45)
    return ListedColormap(table)


def _overlay(ax: plt.Axes, image: np.ndarray, labels: np.ndarray, muscles: dict[int, str], cmap: ListedColormap,
             aspect: float, *, names: bool = True) -> None:
    vmax = float(np.percentile(image, 99.5)) or 1.0
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
    shown = np.where(np.isin(labels, list(muscles)), labels, 0)
    ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, aspect=aspect, interpolation="nearest")
    edges = shown != ndimage.grey_erosion(shown, size=3)
    ax.contour(edges & (shown > 0), levels=[0.5], colors="yellow", linewidths=0.3)
    if names:
        for value in np.unique(shown):
            if value == 0:
                continue
            yy, xx = np.nonzero(shown == value)
            ax.text(float(xx.mean()), float(yy.mean()), muscles[int(value)], color="white", fontsize=4,
                    ha="center", va="center")
    ax.set_axis_off()


def t2_mosaic(stitched: sitk.Image, labels: sitk.Image, table: Sequence[AtlasLabel], out: Path,
              planes: int = 4) -> Path:
    """Coronal planes of the stitched T2 (identity-direction grid) with the propagated ROIs."""
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, stitched, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                               sitk.sitkUInt8))
    img = sitk.GetArrayFromImage(stitched)  # (z, y, x)
    muscles = {lab_.value: _short(lab_) for lab_ in table if lab_.is_muscle}
    body_y = np.nonzero(img.max(axis=(0, 2)) > 0.05 * img.max())[0]
    y0, y1 = (int(body_y.min()), int(body_y.max())) if body_y.size else (0, img.shape[1] - 1)
    ys = np.linspace(y0 + (y1 - y0) * 0.2, y0 + (y1 - y0) * 0.8, planes).astype(int)
    sp = stitched.GetSpacing()
    fig, axes = plt.subplots(1, planes, figsize=(3.2 * planes, 9), dpi=150)
    cmap = _colours(table)
    for ax, y in zip(np.atleast_1d(axes), ys):
        # rows: head (high z) at the top; columns: patient's right (−x) on the viewer's left
        _overlay(ax, img[::-1, y, :], lab[::-1, y, :], muscles, cmap, aspect=sp[2] / sp[0])
        ax.set_title(f"coronal y = {stitched.GetOrigin()[1] + y * sp[1]:.0f} mm", fontsize=7)
    return _save(fig, out)


def dwi_mosaic(b0_stations: Sequence[sitk.Image], station_labels: Sequence[sitk.Image], table: Sequence[AtlasLabel],
               out: Path) -> Path:
    """The middle axial slice of every DWI station (b0) with the propagated ROIs."""
    muscles = {lab.value: _short(lab) for lab in table if lab.is_muscle}
    n = len(b0_stations)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), dpi=150, squeeze=False)
    cmap = _colours(table)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_axis_off()
            continue
        img = sitk.GetArrayViewFromImage(b0_stations[i])
        lab = sitk.GetArrayViewFromImage(station_labels[i])
        counts = np.isin(lab, list(muscles)).sum(axis=(1, 2))
        k = int(np.argmax(counts)) if counts.any() else img.shape[0] // 2
        _overlay(ax, img[k], lab[k], muscles, cmap, aspect=1.0)
        ax.set_title(f"DWI station {i + 1}, slice {k + 1}", fontsize=7)
    return _save(fig, out)


def thumbnail(source: Path, out: Path, width: int = 360) -> Path:
    """A small PNG of ``source`` for the report (aspect kept)."""
    img = plt.imread(source)
    w = img.shape[1]
    step = max(1, w // width)
    plt.imsave(out, img[::step, ::step])
    return out


def _save(fig: plt.Figure, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _short(lab: AtlasLabel) -> str:
    side = {"left": " L", "right": " R"}.get(lab.side, "")
    return lab.key.replace("_", " ")[:14] + side


def write_qc(out_dir: Path, stitched: sitk.Image, labels: sitk.Image, table: Sequence[AtlasLabel],
             b0_stations: Sequence[sitk.Image] = (), dwi_labels: Sequence[sitk.Image] = ()) -> QcPictures:
    """All QC pictures of one visit into ``out_dir``."""
    t2 = t2_mosaic(stitched, labels, table, out_dir / "t2_rois.png")
    dwi = dwi_mosaic(b0_stations, dwi_labels, table, out_dir / "dwi_rois.png") if b0_stations else None
    return QcPictures(t2=t2, dwi=dwi, thumbnail=thumbnail(t2, out_dir / "thumbnail.png"))


def overview(t2_stations: Sequence[sitk.Image], out: Path, axial_z: float | None = None,
             in_plane_mm: float = 1.5) -> Path:
    """The stitched T2 at ``in_plane_mm``: its mid-coronal plane and one axial slice (default mid-thigh),
    to look at a subject's anatomy."""
    from quant.pipeline import stitch_on, union_grid

    grid = union_grid(list(t2_stations), in_plane_mm)
    img = sitk.GetArrayFromImage(stitch_on(list(t2_stations), grid))  # (z, y, x)
    z0, sp = grid.GetOrigin()[2], in_plane_mm
    profile = img.max(axis=(1, 2))
    body = np.nonzero(profile > 0.1 * profile.max())[0]
    top, bottom = z0 + body.max() * sp, z0 + body.min() * sp
    z = axial_z if axial_z is not None else top - 0.62 * (top - bottom)  # mid-thigh of an adult
    k = int(np.clip(round((z - z0) / sp), 0, img.shape[0] - 1))
    y_mid = int(np.argmax(img.sum(axis=(0, 2))))  # the coronal plane through most of the body
    vmax = float(np.percentile(img, 99.5)) or 1.0
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 12), dpi=120, gridspec_kw={"width_ratios": [1, 1.3]})
    a.imshow(img[::-1, y_mid, :], cmap="gray", vmin=0, vmax=vmax)
    a.set_title(f"stitched T2, coronal y = {grid.GetOrigin()[1] + y_mid * sp:.0f} mm", fontsize=8)
    a.axhline(img.shape[0] - 1 - k, color="orange", lw=0.6)
    b.imshow(img[k], cmap="gray", vmin=0, vmax=vmax)
    b.set_title(f"axial z = {z0 + k * sp:.0f} mm", fontsize=8)
    for ax in (a, b):
        ax.set_axis_off()
    return _save(fig, out)
