"""elastix transforms outside elastix: the same mapping as SimpleITK transforms, labels carried through a field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from quant.register import (
    Transform,
    _itk,
    _onto,
    _parameter_object,
    as_displacement,
    field_spacing_mm,
    register,
    registration_maps,
    resample,
    to_itk,
    to_sitk,
    warp_labels,
)
from tests.support.calves import write_contoured_calves


@pytest.fixture(scope="module")
def calves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_contoured_calves(tmp_path_factory.mktemp("calves"), (0, 1))


@pytest.fixture(scope="module")
def registered(calves: Path) -> tuple[sitk.Image, sitk.Image, Transform]:
    """Calf 1 registered to calf 0 (affine + B-spline): fixed image, moving labels, transform."""
    fixed = sitk.ReadImage(str(calves / "calf0_t2.nii.gz"), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(calves / "calf1_t2.nii.gz"), sitk.sitkFloat32)
    maps = registration_maps(deformable=True, grid_mm=20.0, iterations=60, resolutions=3)
    return fixed, sitk.ReadImage(str(calves / "calf1_labels.nii.gz"), sitk.sitkUInt8), register(fixed, moving, maps)


def transformix_field(transform: Transform, grid: sitk.Image, out: Path) -> np.ndarray:
    """transformix's own deformation field of ``transform`` on ``grid`` (z, y, x, 3); transformix also writes it
    as a file, into ``out``."""
    itk = _itk()
    tf = itk.TransformixFilter.New(to_itk(grid))
    tf.SetOutputDirectory(str(out))
    tf.SetTransformParameterObject(_parameter_object(_onto(transform.maps, grid, nearest=False)))
    tf.SetComputeDeformationField(True)
    tf.SetLogToConsole(False)
    tf.UpdateLargestPossibleRegion()
    return np.asarray(itk.array_from_image(tf.GetOutputDeformationField()), dtype=np.float64)


def test_an_affine_and_b_spline_transform_maps_every_voxel_as_transformix_does(
        registered: tuple[sitk.Image, sitk.Image, Transform], tmp_path: Path) -> None:
    fixed, _, transform = registered
    assert [m["Transform"][0] for m in transform.maps] == ["AffineTransform", "BSplineTransform"]
    expected = transformix_field(transform, fixed, tmp_path)
    assert np.abs(expected).max() > 1.0  # a transform worth checking: it moves points by millimetres
    converted = sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
        to_sitk(transform), sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(), fixed.GetSpacing(),
        fixed.GetDirection()))
    assert np.abs(converted - expected).max() < 1e-3  # mm; the composition order is elastix's


def test_a_displacement_field_on_a_coarser_grid_departs_from_the_transform_by_a_tenth_of_a_millimetre_at_most(
        registered: tuple[sitk.Image, sitk.Image, Transform]) -> None:
    fixed, _, transform = registered
    spacing = field_spacing_mm(transform, fixed)
    control = min(float(v) for v in transform.maps[-1]["GridSpacing"])  # elastix's final grid, about 20 mm
    assert spacing == pytest.approx(max(control / 5, min(fixed.GetSpacing())))
    field = as_displacement(transform, fixed, spacing)
    exact = to_sitk(transform)
    rng = np.random.default_rng(7)
    size = np.asarray(fixed.GetSize())
    for _ in range(500):  # anywhere in the grid, its border included
        point = fixed.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in rng.uniform(0, size - 1)))
        assert np.abs(np.subtract(field.TransformPoint(point), exact.TransformPoint(point))).max() < 0.15


def test_labels_carried_through_the_field_are_transformix_s_labels(
        registered: tuple[sitk.Image, sitk.Image, Transform]) -> None:
    fixed, labels, transform = registered
    ours = sitk.GetArrayFromImage(warp_labels(labels, transform, fixed))
    theirs = sitk.GetArrayFromImage(resample(sitk.Cast(labels, sitk.sitkFloat32), transform, fixed, nearest=True))
    body = (ours > 0) | (theirs > 0)
    assert body.sum() > 1000 and (ours[body] == theirs[body]).mean() > 0.995
    assert set(np.unique(ours).tolist()) == set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
