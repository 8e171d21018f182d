"""Image registration with elastix (itk-elastix): atlas → subject, DWI → T2, and label transfer.

Registration itself is elastix's (multi-resolution affine then B-spline, Mattes mutual
information, adaptive stochastic gradient descent); this module only converts images
between SimpleITK and ITK, builds the parameter maps, and resamples label volumes with the
resulting transforms (nearest neighbour, so labels stay labels). Transforms are kept as
elastix parameter maps (plain strings), which serialise to JSON so a result can be
reproduced with transformix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import SimpleITK as sitk

ParameterMap = dict[str, list[str]]


@cache
def _itk() -> Any:
    import itk  # imported lazily: loading ITK's wrappers takes seconds

    return itk


def to_itk(img: sitk.Image) -> Any:
    """A SimpleITK image as an ITK float32 image with the same geometry."""
    itk = _itk()
    out = itk.image_from_array(sitk.GetArrayFromImage(img).astype(np.float32))
    out.SetOrigin(img.GetOrigin())
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(itk.matrix_from_array(np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)))
    return out


@dataclass(frozen=True, kw_only=True)
class Transform:
    """An elastix transform: parameter maps applied in order (the last one maps output → input points)."""

    maps: tuple[ParameterMap, ...]

    def as_data(self) -> list[ParameterMap]:
        """The parameter maps as plain JSON-ready data (what transformix reads, map by map)."""
        return [dict(m) for m in self.maps]


def _parameter_object(maps: list[ParameterMap]) -> Any:
    itk = _itk()
    po = itk.ParameterObject.New()
    for m in maps:
        po.AddParameterMap({k: tuple(v) for k, v in m.items()})
    return po


def registration_maps(*, deformable: bool, grid_mm: float = 40.0, iterations: int = 200,
                      resolutions: int = 4, samples: int = 4096, initialise: bool = True) -> list[ParameterMap]:
    """Affine (and B-spline) parameter maps tuned for whole-body T2 at ~4 mm.

    More resolutions than elastix's default let the coarse levels find the body along its
    long axis; the B-spline grid of ``grid_mm`` follows limb articulation and girth changes.
    Mutual information alone (no bending-energy penalty): on the phantom the penalty cost
    three times the time for no gain in Dice (0.891 vs 0.887 median, bench notes in README).
    Downsampling pyramids: the coarse levels cost a fraction of the smoothing-only default.
    ``initialise`` aligns the centres of gravity first; leave it off when the moving image is
    already close (a regional refinement after the whole-body registration).
    """
    itk = _itk()
    po = itk.ParameterObject.New()
    pyramids = {"FixedImagePyramid": ["FixedRecursiveImagePyramid"], "MovingImagePyramid": ["MovingRecursiveImagePyramid"]}
    common = {"MaximumNumberOfIterations": [str(iterations)], "NumberOfSpatialSamples": [str(samples)],
              "WriteResultImage": ["false"], **pyramids}
    affine = {k: list(v) for k, v in dict(po.GetDefaultParameterMap("affine", resolutions)).items()}
    affine.update(common)
    if initialise:
        affine.update({"AutomaticTransformInitialization": ["true"],
                       "AutomaticTransformInitializationMethod": ["CenterOfGravity"]})
    maps = [affine]
    if deformable:
        bspline = {k: list(v) for k, v in dict(po.GetDefaultParameterMap("bspline", resolutions, grid_mm)).items()}
        bspline.update({**common, "Registration": ["MultiResolutionRegistration"],
                        "Metric": ["AdvancedMattesMutualInformation"]})
        for key in ("Metric0Weight", "Metric1Weight"):
            bspline.pop(key, None)
        maps.append(bspline)
    return maps


def register(fixed: sitk.Image, moving: sitk.Image, maps: list[ParameterMap],
             threads: int | None = None) -> Transform:
    """Register ``moving`` onto ``fixed``; the result maps fixed-space points into moving space."""
    itk = _itk()
    method = itk.ElastixRegistrationMethod.New(to_itk(fixed), to_itk(moving))
    method.SetParameterObject(_parameter_object(maps))
    method.SetLogToConsole(False)
    if threads:
        method.SetNumberOfThreads(threads)
    method.UpdateLargestPossibleRegion()
    result = method.GetTransformParameterObject()
    out = []
    for i in range(result.GetNumberOfParameterMaps()):
        out.append({k: list(v) for k, v in dict(result.GetParameterMap(i)).items()})
    return Transform(maps=tuple(out))


def _onto(maps: tuple[ParameterMap, ...], reference: sitk.Image, *, nearest: bool) -> list[ParameterMap]:
    """The transform's maps with the output grid set to ``reference`` (and NN resampling for labels)."""
    out = []
    size = [str(v) for v in reference.GetSize()]
    spacing = [repr(float(v)) for v in reference.GetSpacing()]
    origin = [repr(float(v)) for v in reference.GetOrigin()]
    direction = [repr(float(v)) for v in np.asarray(reference.GetDirection()).reshape(3, 3).T.ravel()]
    for m in maps:
        m = {k: list(v) for k, v in m.items()}
        m.update({"Size": size, "Spacing": spacing, "Origin": origin, "Direction": direction,
                  "ResultImagePixelType": ["float"], "DefaultPixelValue": ["0"]})
        if nearest:
            m.update({"ResampleInterpolator": ["FinalNearestNeighborInterpolator"],
                      "FinalBSplineInterpolationOrder": ["0"]})
        out.append(m)
    return out


def resample(image: sitk.Image, transform: Transform, reference: sitk.Image, *, nearest: bool = False) -> sitk.Image:
    """``image`` (in the transform's moving space) resampled onto ``reference``'s grid with transformix."""
    itk = _itk()
    tf = itk.TransformixFilter.New(to_itk(image))
    tf.SetTransformParameterObject(_parameter_object(_onto(transform.maps, reference, nearest=nearest)))
    tf.SetLogToConsole(False)
    tf.UpdateLargestPossibleRegion()
    arr = _itk().array_from_image(tf.GetOutput())
    out = sitk.GetImageFromArray(np.rint(arr).astype(np.uint8) if nearest else arr.astype(np.float32))
    out.CopyInformation(reference)
    return out


def warp_labels(labels: sitk.Image, transform: Transform, reference: sitk.Image) -> sitk.Image:
    """Label volume carried by ``transform`` onto ``reference``'s grid (nearest neighbour, uint8)."""
    return resample(sitk.Cast(labels, sitk.sitkFloat32), transform, reference, nearest=True)
