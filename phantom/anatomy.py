"""A whole-body subject drawn as labelled compartments on the truth grid (LPS, mm).

The body is built from smooth shapes whose size and position vary along z: tapered
elliptic tubes (trunk, neck, limb segments, vertebral column, psoas …) and ellipsoids
(head, brain, tongue, lungs, liver, bladder, femoral heads, hand muscles). Limb segments
are filled from the outside in — skin, subcutaneous fat, muscle — and their muscle layer is
split into compartments by angular sectors around the bone (quadriceps in front of the
femur, hamstrings behind it, …) with thin fat septa between them, which is how the
compartments look on axial MRI. Bones have a cortical shell and a marrow cavity.

Every muscle of the catalogue (storage/catalogue.py) is its own label, per side where
paired; so are the marrow compartments that serve as relative-T2 references. The subject
is drawn in a canonical pose at its own height, girth, fat thickness, muscle bulk and arm
abduction, then placed on the table by a small rigid pose and a smooth random deformation
(``place``), which a registration has to undo.

Units: mm and degrees. Reference proportions are those of a 1.75 m adult.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from storage.catalogue import MUSCLES  # the one muscle vocabulary (pure data; phantom imports nothing else of ours)

# --- labels -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Label:
    """One compartment of the label volume."""

    value: int
    key: str  # muscle key from the catalogue, or a tissue key
    side: str  # left | right | none
    tissue: str  # muscle | marrow | bone | fat | skin | fluid | brain | lung | liver | soft | air
    name: str


_TISSUES: tuple[tuple[int, str, str, str], ...] = (
    (0, "air", "air", "Air / background"),
    (1, "skin", "skin", "Skin"),
    (2, "fat", "fat", "Subcutaneous and intermuscular fat"),
    (3, "cortical_bone", "bone", "Cortical bone"),
    (4, "other_muscle", "muscle", "Other muscle"),
    (5, "brain", "brain", "Brain"),
    (6, "csf", "fluid", "Cerebrospinal fluid"),
    (7, "lung", "lung", "Lung"),
    (8, "liver", "liver", "Liver"),
    (9, "bladder", "fluid", "Urinary bladder"),
    (10, "soft_tissue", "soft", "Abdominal and thoracic soft tissue"),
    (20, "marrow_vertebra", "marrow", "Vertebral body marrow"),
    (21, "marrow_humerus", "marrow", "Humeral marrow"),
    (22, "marrow_forearm", "marrow", "Radius and ulna marrow"),
    (23, "marrow_pelvis", "marrow", "Pelvic bone marrow"),
    (24, "marrow_femur", "marrow", "Femoral marrow"),
    (25, "marrow_tibia", "marrow", "Tibial and fibular marrow"),
)
MUSCLE_LABEL_BASE = 40


def label_table() -> list[Label]:
    """Every label value of a phantom subject (and of the default atlas), tissues then muscles."""
    out = [Label(value=v, key=k, side="none", tissue=t, name=n) for v, k, t, n in _TISSUES]
    for i, m in enumerate(MUSCLES):
        for j, side in enumerate(m.sides):
            suffix = "" if side == "none" else f" {side}"
            out.append(Label(value=MUSCLE_LABEL_BASE + 2 * i + j, key=m.key, side=side, tissue="muscle", name=m.name + suffix))
    return out


LABELS: tuple[Label, ...] = tuple(label_table())
LABEL_BY_KEY: dict[tuple[str, str], int] = {(lab.key, lab.side): lab.value for lab in LABELS}
T = {lab.key: lab.value for lab in LABELS if lab.side == "none"}  # tissue key → value


def muscle_label(key: str, side: str) -> int:
    return LABEL_BY_KEY[(key, "none" if side == "none" else side)]


# --- subject parameters -------------------------------------------------------------------------

Population = Literal["paper", "site"]  # whose bodies: the study's cohort, or another site's (AnatomyParams.random)
POPULATIONS: tuple[str, ...] = ("paper", "site")
# How each population's bodies are drawn: per trait ((mean of men, of women), SD, lowest, highest), normal and
# clipped, in this order; the arm's abduction uniform between two angles (degrees).
BODIES: dict[str, dict[str, Any]] = {
    "paper": {"height_mm": ((1780.0, 1650.0), 60.0, 1600.0, 1950.0), "girth": ((1.0, 1.0), 0.04, 0.92, 1.08),
              "fat_mm": ((8.0, 11.0), 2.5, 4.0, 14.0), "muscle_bulk": ((1.0, 0.92), 0.06, 0.8, 1.15),
              "arm": (0.0, 2.5)},
    "site": {"height_mm": ((1720.0, 1600.0), 60.0, 1500.0, 1900.0), "girth": ((0.88, 0.88), 0.04, 0.80, 0.96),
             "fat_mm": ((5.0, 7.0), 1.5, 3.0, 10.0), "muscle_bulk": ((0.80, 0.74), 0.05, 0.65, 0.92),
             "arm": (2.0, 3.5)},
}


@dataclass(frozen=True, kw_only=True)
class AnatomyParams:
    """What makes one body differ from another (and one visit's pose from another's)."""

    height_mm: float = 1750.0
    girth: float = 1.0  # scale of trunk and limb widths
    fat_mm: float = 8.0  # subcutaneous fat thickness of the limbs (trunk × 1.5)
    muscle_bulk: float = 1.0  # scale of muscle thickness
    arm_abduction_deg: float = 0.0
    atrophy: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (muscle, side) → thickness scale ≤ 1
    # Placement on the table (per visit): rotation about x, y, z (deg), translation (mm), deformation.
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    deformation_mm: float = 0.0  # SD of the B-spline control point displacements
    deformation_seed: int = 0

    @staticmethod
    def random(rng: np.random.Generator, sex: str = "M", population: Population = "paper") -> AnatomyParams:
        """A plausible adult of ``population`` (:data:`POPULATIONS`): ``paper``, the study's cohort (heights
        1.60–1.95 m, women shorter on average); ``site``, another site's older patients — shorter, thinner limbs
        (less girth and muscle bulk, little fat) and arms held further from the body — which an atlas drawn from
        the paper's population fits worse."""
        if population not in BODIES:
            raise ValueError(f"population {population!r}: one of {', '.join(POPULATIONS)}")
        b = BODIES[population]

        def trait(name: str) -> float:
            (mean_m, mean_f), sd, low, high = b[name]
            return float(np.clip(rng.normal(mean_m if sex == "M" else mean_f, sd), low, high))

        return AnatomyParams(height_mm=trait("height_mm"), girth=trait("girth"), fat_mm=trait("fat_mm"),
                             muscle_bulk=trait("muscle_bulk"), arm_abduction_deg=float(rng.uniform(*b["arm"])))

    def placed(self, rng: np.random.Generator, deformation_mm: float = 3.0) -> AnatomyParams:
        """The same body with a new random position on the table (one visit, or one rescan)."""
        from dataclasses import replace
        return replace(
            self,
            rotation_deg=(float(rng.normal(0, 1.0)), float(rng.normal(0, 0.3)), float(rng.normal(0, 1.5))),
            translation_mm=(float(rng.normal(0, 5.0)), float(rng.normal(0, 3.0)), float(rng.normal(0, 10.0))),
            deformation_mm=deformation_mm,
            deformation_seed=int(rng.integers(0, 2**31 - 1)),
        )


# --- drawing ------------------------------------------------------------------------------------

Profile = list[tuple[float, float, float, float, float]]  # (z, cx, cy, a, b) control points, z descending


class Canvas:
    """A label volume on an axis-aligned grid, drawn on with tubes and ellipsoids."""

    def __init__(self, grid: sitk.Image) -> None:
        self.grid = grid
        nx, ny, nz = grid.GetSize()
        ox, oy, oz = grid.GetOrigin()
        s = grid.GetSpacing()
        self.x = (ox + s[0] * np.arange(nx)).astype(np.float32)
        self.y = (oy + s[1] * np.arange(ny)).astype(np.float32)
        self.z = (oz + s[2] * np.arange(nz)).astype(np.float32)
        self.s = float(s[0])
        self.labels = np.zeros((nz, ny, nx), dtype=np.uint8)

    def _span(self, axis: np.ndarray, lo: float, hi: float) -> slice:
        i0 = int(np.searchsorted(axis, lo, side="left"))
        i1 = int(np.searchsorted(axis, hi, side="right"))
        return slice(max(i0, 0), min(i1, len(axis)))

    def tube(self, profile: Profile, value: int, only: Iterable[int] | None = None,
             sector: tuple[float, float, float] | None = None) -> None:
        """Fill an elliptic tube whose centre and semi-axes follow ``profile`` linearly in z.

        ``only`` restricts drawing to voxels currently holding one of those labels.
        ``sector`` = (side_sign, θ_from, θ_to): keep only the angular sector, θ measured in the
        axial plane from anterior (0°) towards lateral (+90°) (lateral = +x for side_sign +1).
        """
        zs = np.array([p[0] for p in profile], dtype=float)
        order = np.argsort(zs)
        cols = [np.array([p[i] for p in profile], dtype=float)[order] for i in range(5)]
        zk = self._span(self.z, cols[0][0], cols[0][-1])
        if zk.start >= zk.stop:
            return
        z = self.z[zk]
        cx, cy, a, b = (np.interp(z, cols[0], c)[:, None, None] for c in cols[1:])
        xs = self._span(self.x, float((cx - a).min()), float((cx + a).max()))
        ys = self._span(self.y, float((cy - b).min()), float((cy + b).max()))
        if xs.start >= xs.stop or ys.start >= ys.stop:
            return
        dx = self.x[xs][None, None, :] - cx
        dy = self.y[ys][None, :, None] - cy
        inside = (dx / a) ** 2 + (dy / b) ** 2 <= 1.0
        if sector is not None:
            sign, t0, t1 = sector
            theta = np.degrees(np.arctan2(sign * dx, -dy))
            inside &= _in_sector(theta, t0, t1)
        self._paint((zk, ys, xs), inside, value, only)

    def ellipsoid(self, centre: tuple[float, float, float], radii: tuple[float, float, float], value: int,
                  only: Iterable[int] | None = None) -> None:
        cx, cy, cz = centre
        rx, ry, rz = radii
        zk, ys, xs = (self._span(self.z, cz - rz, cz + rz), self._span(self.y, cy - ry, cy + ry),
                      self._span(self.x, cx - rx, cx + rx))
        if zk.start >= zk.stop or ys.start >= ys.stop or xs.start >= xs.stop:
            return
        inside = (((self.x[xs][None, None, :] - cx) / rx) ** 2 + ((self.y[ys][None, :, None] - cy) / ry) ** 2
                  + ((self.z[zk][:, None, None] - cz) / rz) ** 2) <= 1.0
        self._paint((zk, ys, xs), inside, value, only)

    def _paint(self, box: tuple[slice, slice, slice], inside: np.ndarray, value: int,
               only: Iterable[int] | None) -> None:
        view = self.labels[box]
        if only is not None:
            inside = inside & np.isin(view, np.fromiter(only, dtype=np.uint8))
        view[inside] = value

    def image(self) -> sitk.Image:
        img = sitk.GetImageFromArray(self.labels)
        img.CopyInformation(self.grid)
        return img


def _in_sector(theta: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """θ in [t0, t1] (degrees, may wrap past ±180)."""
    t0 = (t0 + 180.0) % 360.0 - 180.0
    t1 = (t1 + 180.0) % 360.0 - 180.0
    return (theta >= t0) & (theta <= t1) if t0 <= t1 else (theta >= t0) | (theta <= t1)


# --- the body -----------------------------------------------------------------------------------

SIDE_SIGN = {"left": 1.0, "right": -1.0}  # patient left is +x
SKIN_MM = 2.0
SEPTUM_DEG = 7.0  # angular width of the fat septum between neighbouring compartments
# Thigh centre and half-width (LR) at the hip, and the hand's half-thickness: the hands lie beside the
# thighs, and both must fit the 400 mm coronal field of view.
THIGH_X = 78.0
THIGH_HALF_WIDTH = 62.0
HAND_HALF = 14.0


@dataclass(frozen=True, kw_only=True)
class Sector:
    """An angular sector of a limb's muscle layer given to one compartment."""

    key: str  # muscle key, or "other_muscle" / "fat"
    theta_from: float
    theta_to: float


class BodyBuilder:
    """Draws the canonical body for one set of parameters on a canvas."""

    def __init__(self, canvas: Canvas, p: AnatomyParams) -> None:
        self.c = canvas
        self.p = p
        self.h = p.height_mm / 1750.0  # z scale
        self.g = p.girth

    def Z(self, z_ref: float) -> float:
        """A reference-body z (vertex 0, 1.75 m) at this subject's height."""
        return z_ref * self.h

    def draw(self) -> None:
        self.head_and_neck()
        self.trunk()
        for side in ("left", "right"):
            self.arm(side)
            self.leg(side)
        self.spine()
        self.neck_and_back_muscles()
        self.pelvis_and_hips()

    # limbs ------------------------------------------------------------------------------------
    def limb(self, side: str, muscle: Profile, bone_centres: list[tuple[float, float, float, float]],
             sectors: list[Sector], marrow: str, fat_mm: float, cortex_mm: float) -> None:
        """A limb segment: skin, fat, muscle layer split into sectors, bone(s) with marrow.

        ``muscle`` gives the muscle layer's outer ellipse along z; ``bone_centres`` are
        (dx_lateral, dy, radius_top, radius_bottom) relative to the limb centre.
        """
        c, sign = self.c, SIDE_SIGN[side]
        grow = lambda prof, d: [(z, cx, cy, a + d, b + d) for z, cx, cy, a, b in prof]  # noqa: E731
        open_to = (T["air"], T["skin"], T["fat"])
        c.tube(grow(muscle, fat_mm + SKIN_MM), T["skin"], only=open_to)
        c.tube(grow(muscle, fat_mm), T["fat"], only=open_to)
        c.tube(muscle, T["other_muscle"], only=open_to)
        layer = (T["other_muscle"],)
        for s in sectors:
            value = T[s.key] if s.key in T else muscle_label(s.key, side)
            thickness = self.p.atrophy.get((s.key, side), 1.0)
            prof = muscle
            if thickness < 1.0:
                prof = [(z, cx, cy, a * (0.45 + 0.55 * thickness), b * (0.45 + 0.55 * thickness))
                        for z, cx, cy, a, b in muscle]
                c.tube(muscle, T["fat"], only=layer, sector=(sign, s.theta_from, s.theta_to))
                c.tube(prof, value, only=(T["fat"],), sector=(sign, s.theta_from, s.theta_to))
            c.tube(prof, value, only=layer, sector=(sign, s.theta_from + SEPTUM_DEG / 2, s.theta_to - SEPTUM_DEG / 2))
        bounds = sorted({t for s in sectors for t in (s.theta_from, s.theta_to)})
        for t in bounds:  # fat septa between compartments
            c.tube(muscle, T["fat"], only=[lab.value for lab in LABELS if lab.tissue == "muscle"],
                   sector=(sign, t - SEPTUM_DEG / 2, t + SEPTUM_DEG / 2))
        for dxl, dy, r0, r1 in bone_centres:
            (zt, cxt, cyt, _, _), (zb, cxb, cyb, _, _) = muscle[0], muscle[-1]
            bone = [(zt, cxt + sign * dxl, cyt + dy, r0, r0), (zb, cxb + sign * dxl, cyb + dy, r1, r1)]
            c.tube(bone, T["cortical_bone"])
            c.tube([(z, cx, cy, a - cortex_mm, b - cortex_mm) for z, cx, cy, a, b in bone], T[marrow])

    def arm(self, side: str) -> None:
        sign, Z, g, k = SIDE_SIGN[side], self.Z, self.g, self.p.muscle_bulk
        fat = self.p.fat_mm * 0.8
        trunk_half = 105.0 * g
        arm_r = 34.0 * g
        x_sh = sign * (trunk_half + 3.0 + arm_r + fat + SKIN_MM)
        # The hand lies beside the thigh: the arm line runs from the shoulder to there, plus any abduction.
        x_wrist = sign * (THIGH_X * g + THIGH_HALF_WIDTH * g + self.p.fat_mm + 2 * SKIN_MM + 3.0 + HAND_HALF)
        tan = (x_wrist - x_sh) / (Z(-300.0) - Z(-920.0)) + sign * np.tan(np.radians(self.p.arm_abduction_deg))
        x_at = lambda z: x_sh + (Z(-300.0) - z) * tan  # noqa: E731
        y_arm = -10.0
        z0, z_d, z_e, z_w, z_h = Z(-300.0), Z(-420.0), Z(-660.0), Z(-920.0), Z(-1090.0)
        r_hum = 10.0 * g
        bone_r = lambda r, scale: r + (scale - r) * k  # noqa: E731  (muscle thickness scales with bulk)
        # shoulder: humeral head and deltoid cap
        upper = [(z0, x_at(z0), y_arm, bone_r(r_hum, arm_r), bone_r(r_hum, arm_r + 4)),
                 (z_d, x_at(z_d), y_arm, bone_r(r_hum, arm_r), bone_r(r_hum, arm_r + 2))]
        self.limb(side, upper, [(0.0, 0.0, r_hum + 4, r_hum)],
                  [Sector(key="deltoid", theta_from=-75.0, theta_to=165.0)], "marrow_humerus", fat, 3.0)
        self.c.ellipsoid((x_at(Z(-318.0)), y_arm, Z(-318.0)), (22.0 * g, 22.0 * g, 24.0 * g), T["cortical_bone"],
                         only=(T["other_muscle"], T["marrow_humerus"], T["fat"]))
        self.c.ellipsoid((x_at(Z(-318.0)), y_arm, Z(-318.0)), (19.0 * g, 19.0 * g, 21.0 * g), T["marrow_humerus"],
                         only=(T["cortical_bone"],))
        arm = [(z_d, x_at(z_d), y_arm, bone_r(r_hum, arm_r * 0.95), bone_r(r_hum, arm_r + 1)),
               (z_e, x_at(z_e), y_arm, bone_r(r_hum, arm_r * 0.8), bone_r(r_hum, arm_r * 0.85))]
        self.limb(side, arm, [(0.0, 3.0, r_hum, r_hum * 0.9)],
                  [Sector(key="biceps_brachii", theta_from=-70.0, theta_to=70.0), Sector(key="triceps", theta_from=110.0, theta_to=250.0)],
                  "marrow_humerus", fat, 3.0)
        forearm = [(z_e, x_at(z_e), y_arm, bone_r(8, 27.0 * g), bone_r(8, 32.0 * g)),
                   (z_w, x_at(z_w), y_arm, bone_r(8, 17.0 * g), bone_r(8, 20.0 * g))]
        z_br = Z(-820.0)  # brachioradialis belly ends two thirds down the forearm
        self.limb(side, forearm, [(0.0, -9.0, 7.5, 6.5), (0.0, 10.0, 7.5, 6.0)],
                  [Sector(key="forearm", theta_from=15.0, theta_to=105.0)], "marrow_forearm", fat * 0.7, 2.5)
        self.c.tube([(z_br, x_at(z_br), y_arm, 40.0, 40.0), (z_w, x_at(z_w), y_arm, 40.0, 40.0)],
                    T["other_muscle"], only=(muscle_label("forearm", side),))
        self.hand(side, x_at(z_w), y_arm, z_w, z_h)

    def hand(self, side: str, x: float, y: float, z_wrist: float, z_tip: float) -> None:
        """Palm facing the thigh (medial), thumb anterior: thenar, hypothenar and first dorsal interosseous."""
        c, sign, Z = self.c, SIDE_SIGN[side], self.Z
        med = -sign  # towards the midline
        zc = z_wrist + (z_tip - z_wrist) * 0.30
        c.ellipsoid((x, y, zc), (HAND_HALF, 42.0 + 2, 58.0), T["skin"], only=(T["air"],))
        c.ellipsoid((x, y, zc), (HAND_HALF - 2, 42.0, 56.0), T["fat"], only=(T["air"], T["skin"]))
        c.tube([(zc, x, y, 13.0, 38.0), (z_tip, x, y - 5, 9.0, 30.0)], T["skin"], only=(T["air"],))
        c.tube([(zc, x, y, 11.0, 36.0), (z_tip + 4, x, y - 5, 7.0, 28.0)], T["fat"], only=(T["skin"],))
        for dy in (-18.0, -6.0, 6.0, 18.0):  # metacarpals
            c.tube([(zc + 30, x + sign * 2, y + dy, 4.0, 4.0), (zc - 35, x + sign * 2, y + dy, 3.5, 3.5)],
                   T["cortical_bone"], only=(T["fat"],))
        c.ellipsoid((x + med * 6.0, y - 26.0, zc + 8), (7.5, 13.0, 26.0), muscle_label("thenar", side),
                    only=(T["fat"],))
        c.ellipsoid((x + med * 6.0, y + 27.0, zc + 2), (7.0, 10.0, 27.0), muscle_label("hypothenar", side),
                    only=(T["fat"],))
        c.ellipsoid((x + sign * 4.0, y - 30.0, zc - 22), (6.0, 9.0, 20.0),
                    muscle_label("first_dorsal_interosseous", side), only=(T["fat"], T["skin"], T["air"]))
        _ = Z

    def leg(self, side: str) -> None:
        sign, Z, g, k = SIDE_SIGN[side], self.Z, self.g, self.p.muscle_bulk
        fat = self.p.fat_mm
        x_hip, x_knee, x_ankle = sign * THIGH_X * g, sign * (THIGH_X - 4.0) * g, sign * (THIGH_X - 8.0) * g
        z_top, z_knee, z_ankle, z_sole = Z(-900.0), Z(-1255.0), Z(-1685.0), Z(-1750.0)
        m = lambda r_bone, r: r_bone + (r - r_bone) * k  # noqa: E731
        thigh = [(z_top, x_hip, 0.0, m(14, THIGH_HALF_WIDTH * g), m(14, 80.0 * g)),
                 (z_knee, x_knee, -5.0, m(14, 42.0 * g), m(14, 46.0 * g))]
        self.limb(side, thigh, [(4.0, 8.0, 14.0, 13.0)],
                  [Sector(key="quadriceps", theta_from=-60.0, theta_to=115.0), Sector(key="hamstrings", theta_from=140.0, theta_to=210.0)],
                  "marrow_femur", fat, 5.0)
        knee = [(z_knee + 5, x_knee, -5.0, 42.0 * g, 46.0 * g), (z_knee - 45, x_knee, -5.0, 40.0 * g, 44.0 * g)]
        self.limb(side, knee, [(0.0, -5.0, 30.0, 24.0)], [], "marrow_tibia", fat, 2.5)
        shank = [(z_knee - 40, x_knee, 0.0, m(12, 46.0 * g), m(12, 52.0 * g)),
                 (z_ankle, x_ankle, 5.0, m(12, 24.0 * g), m(12, 24.0 * g))]
        self.limb(side, shank, [(-10.0, -18.0, 14.0, 10.0), (24.0, 5.0, 7.0, 6.0)],
                  [Sector(key="tibialis_anterior", theta_from=0.0, theta_to=70.0), Sector(key="other_muscle", theta_from=70.0, theta_to=125.0),
                   Sector(key="gastrocnemius_soleus", theta_from=125.0, theta_to=265.0), Sector(key="fat", theta_from=265.0, theta_to=360.0)],
                  "marrow_tibia", fat * 0.8, 3.0)
        # foot: toes up (supine), pointing anterior (−y)
        c = self.c
        c.tube([(z_ankle, x_ankle, 10.0, 30.0, 40.0), (z_sole, x_ankle, -40.0, 35.0, 90.0)], T["skin"],
               only=(T["air"],))
        c.tube([(z_ankle, x_ankle, 10.0, 28.0, 38.0), (z_sole + 3, x_ankle, -40.0, 33.0, 88.0)], T["fat"],
               only=(T["skin"],))
        c.tube([(z_ankle, x_ankle, 12.0, 14.0, 22.0), (z_sole + 12, x_ankle, 5.0, 16.0, 30.0)],
               T["cortical_bone"], only=(T["fat"],))
        c.tube([(z_ankle, x_ankle, 12.0, 11.0, 19.0), (z_sole + 15, x_ankle, 5.0, 13.0, 27.0)],
               T["marrow_tibia"], only=(T["cortical_bone"],))

    # trunk, head, spine ---------------------------------------------------------------------------
    def trunk(self) -> None:
        Z, g, c = self.Z, self.g, self.c
        fat = self.p.fat_mm * 1.5
        muscle = [(Z(-265.0), 0.0, 5.0, 90.0 * g, 70.0 * g), (Z(-330.0), 0.0, 0.0, 105.0 * g, 92.0 * g),
                  (Z(-520.0), 0.0, 0.0, 103.0 * g, 95.0 * g), (Z(-660.0), 0.0, 0.0, 95.0 * g, 88.0 * g),
                  (Z(-800.0), 0.0, 5.0, 112.0 * g, 100.0 * g), (Z(-905.0), 0.0, 10.0, 110.0 * g, 95.0 * g),
                  (Z(-935.0), 0.0, 10.0, 60.0 * g, 60.0 * g)]
        grow = lambda d: [(z, cx, cy, a + d, b + d) for z, cx, cy, a, b in muscle]  # noqa: E731
        c.tube(grow(fat + SKIN_MM), T["skin"])
        c.tube(grow(fat), T["fat"])
        c.tube(muscle, T["other_muscle"])
        c.tube(grow(-12.0), T["soft_tissue"])
        for sign in (1.0, -1.0):
            c.ellipsoid((sign * 52.0 * g, 5.0, Z(-440.0)), (45.0 * g, 68.0 * g, 115.0 * self.h), T["lung"],
                        only=(T["soft_tissue"],))
        c.ellipsoid((-35.0 * g, -5.0, Z(-600.0)), (68.0 * g, 62.0 * g, 65.0 * self.h), T["liver"],
                    only=(T["soft_tissue"],))
        c.ellipsoid((0.0, -35.0, Z(-860.0)), (32.0, 28.0, 28.0), T["bladder"], only=(T["soft_tissue"],))

    def head_and_neck(self) -> None:
        Z, c = self.Z, self.c
        hz = Z(-110.0)
        c.ellipsoid((0.0, 5.0, hz), (75.0, 95.0, 112.0 * self.h), T["skin"])
        c.ellipsoid((0.0, 5.0, hz), (72.0, 92.0, 109.0 * self.h), T["fat"])
        c.ellipsoid((0.0, 12.0, Z(-85.0)), (66.0, 82.0, 80.0 * self.h), T["cortical_bone"])
        c.ellipsoid((0.0, 12.0, Z(-85.0)), (62.0, 78.0, 76.0 * self.h), T["csf"])
        c.ellipsoid((0.0, 12.0, Z(-85.0)), (59.0, 75.0, 73.0 * self.h), T["brain"])
        c.ellipsoid((0.0, -30.0, Z(-175.0)), (28.0, 35.0, 22.0 * self.h), T["other_muscle"], only=(T["fat"],))
        c.ellipsoid((0.0, -38.0, Z(-172.0)), (22.0, 28.0, 17.0 * self.h), muscle_label("tongue", "none"),
                    only=(T["other_muscle"], T["fat"]))
        neck = [(Z(-190.0), 0.0, 15.0, 50.0, 52.0), (Z(-275.0), 0.0, 10.0, 55.0, 55.0)]
        c.tube([(z, cx, cy, a + 8, b + 8) for z, cx, cy, a, b in neck], T["skin"], only=(T["air"], T["skin"]))
        c.tube([(z, cx, cy, a + 6, b + 6) for z, cx, cy, a, b in neck], T["fat"], only=(T["air"], T["skin"]))
        c.tube(neck, T["other_muscle"], only=(T["air"], T["skin"], T["fat"]))
        c.tube([(Z(-200.0), 0.0, -15.0, 12.0, 9.0), (Z(-275.0), 0.0, -25.0, 11.0, 8.0)], T["soft_tissue"],
               only=(T["other_muscle"],))  # airway and oesophagus

    def spine(self) -> None:
        """Vertebral bodies with discs between them, cervical to lumbar; the bodies' marrow is a reference."""
        Z, c = self.Z, self.c
        levels = [(-185.0, 9.0, 22.0), (-290.0, 12.0, 28.0), (-600.0, 19.0, 30.0), (-830.0, 23.0, 18.0)]
        z_vals = np.array([Z(z) for z, _, _ in levels])
        radius = np.array([r for _, r, _ in levels])
        cy_vals = np.array([cy for _, _, cy in levels])
        z = z_vals[0]
        while z > z_vals[-1]:
            r = float(np.interp(-z, -z_vals, radius))
            cy = float(np.interp(-z, -z_vals, cy_vals))
            height = 1.1 * r + 8.0
            top, bot = z - 2.0, z - 2.0 - height
            c.tube([(top, 0.0, cy, r, r * 0.85), (bot, 0.0, cy, r, r * 0.85)], T["cortical_bone"])
            c.tube([(top - 1.5, 0.0, cy, r - 2.0, r * 0.85 - 2.0), (bot + 1.5, 0.0, cy, r - 2.0, r * 0.85 - 2.0)],
                   T["marrow_vertebra"])
            c.tube([(bot, 0.0, cy + r * 0.85 + 8, 7.0, 7.0), (bot - 4.0, 0.0, cy + r * 0.85 + 8, 7.0, 7.0)],
                   T["csf"], only=(T["soft_tissue"], T["other_muscle"]))
            z = bot - 4.0  # disc

    def neck_and_back_muscles(self) -> None:
        Z, g, c = self.Z, self.g, self.c
        soft = (T["other_muscle"], T["soft_tissue"], T["fat"])
        c.tube([(Z(-185.0), 0.0, 42.0, 30.0, 11.0), (Z(-265.0), 0.0, 48.0, 34.0, 11.0)],
               muscle_label("splenius_capitis", "none"), only=soft)
        for side, sign in SIDE_SIGN.items():
            c.tube([(Z(-195.0), sign * 45.0, 20.0, 9.0, 11.0), (Z(-280.0), sign * 18.0, -38.0, 9.0, 11.0)],
                   muscle_label("sternocleidomastoid", side), only=soft)
            back = 92.0 * g
            c.tube([(Z(-255.0), sign * 38.0, 55.0, 28.0, 7.0), (Z(-300.0), sign * 60.0 * g, 68.0, 42.0, 8.0),
                    (Z(-450.0), sign * 45.0 * g, back - 8.0, 36.0, 7.0)],
                   muscle_label("trapezius", side), only=soft)
            c.tube([(Z(-300.0), sign * 24.0, 62.0, 18.0, 16.0), (Z(-600.0), sign * 27.0, 68.0, 22.0, 18.0)],
                   muscle_label("thoracic_paraspinal", side), only=(T["other_muscle"], T["soft_tissue"]))
            c.tube([(Z(-600.0), sign * 28.0, 66.0, 24.0, 18.0), (Z(-830.0), sign * 26.0, 60.0, 22.0, 16.0)],
                   T["other_muscle"], only=(T["soft_tissue"],))
            c.tube([(Z(-610.0), sign * 33.0, 22.0, 14.0, 14.0), (Z(-760.0), sign * 55.0, 10.0, 22.0, 20.0),
                    (Z(-890.0), sign * 78.0 * g, -15.0, 18.0, 16.0)],
                   muscle_label("psoas", side), only=(T["soft_tissue"], T["other_muscle"]))

    def pelvis_and_hips(self) -> None:
        Z, g, c = self.Z, self.g, self.c
        inner = (T["soft_tissue"], T["other_muscle"], T["bladder"])
        for side, sign in SIDE_SIGN.items():
            c.tube([(Z(-770.0), sign * 88.0 * g, 35.0, 30.0, 10.0), (Z(-860.0), sign * 72.0 * g, 15.0, 26.0, 10.0)],
                   T["cortical_bone"], only=inner)
            c.tube([(Z(-773.0), sign * 88.0 * g, 35.0, 27.0, 7.0), (Z(-857.0), sign * 72.0 * g, 15.0, 23.0, 7.0)],
                   T["marrow_pelvis"], only=(T["cortical_bone"],))
            hip = (sign * THIGH_X * g, 0.0, Z(-885.0))
            c.ellipsoid(hip, (24.0, 24.0, 24.0), T["cortical_bone"])
            c.ellipsoid(hip, (21.0, 21.0, 21.0), T["marrow_femur"])
            c.tube([(Z(-800.0), sign * 70.0 * g, 78.0, 55.0 * g, 28.0), (Z(-870.0), sign * 78.0 * g, 82.0, 62.0 * g, 30.0),
                    (Z(-935.0), sign * 82.0 * g, 72.0, 50.0 * g, 22.0)],
                   muscle_label("gluteus_maximus", side), only=(T["other_muscle"], T["soft_tissue"], T["fat"]))
        c.tube([(Z(-790.0), 0.0, 62.0, 32.0, 14.0), (Z(-880.0), 0.0, 72.0, 22.0, 10.0)], T["cortical_bone"], only=inner)
        c.tube([(Z(-793.0), 0.0, 62.0, 29.0, 11.0), (Z(-877.0), 0.0, 72.0, 19.0, 7.0)], T["marrow_pelvis"],
               only=(T["cortical_bone"],))


def draw_canonical(grid: sitk.Image, params: AnatomyParams) -> sitk.Image:
    """The subject in its canonical pose (no table placement), as a uint8 label image on ``grid``."""
    canvas = Canvas(grid)
    BodyBuilder(canvas, params).draw()
    return canvas.image()


def placement(params: AnatomyParams, reference: sitk.Image, field_spacing_mm: float = 8.0) -> sitk.Transform:
    """Rigid pose on the table composed with a smooth random deformation (B-spline, ~10 cm control grid).

    Returned as one dense displacement field sampled every ``field_spacing_mm`` (the motion is
    smooth, and a trilinear field is an order of magnitude faster to apply than the B-spline).
    The transform maps points of the placed (output) space to the canonical space, as
    SimpleITK's resampling expects.
    """
    centre = (0.0, 0.0, -params.height_mm / 2.0)
    rigid = sitk.Euler3DTransform(centre, *np.radians(params.rotation_deg), params.translation_mm)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(rigid)
    if params.deformation_mm > 0:
        bspline = sitk.BSplineTransformInitializer(reference, [4, 4, 20], order=3)
        rng = np.random.default_rng(params.deformation_seed)
        coeffs = rng.normal(0.0, params.deformation_mm, size=len(bspline.GetParameters()))
        bspline.SetParameters(tuple(float(v) for v in coeffs))
        composite.AddTransform(bspline)
    extent = np.asarray(reference.GetSize()) * np.asarray(reference.GetSpacing())
    size = [int(v) for v in np.ceil(extent / field_spacing_mm) + 2]
    origin = tuple(float(v) for v in np.asarray(reference.GetOrigin()) - field_spacing_mm)
    field = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, size, origin,
                                              (field_spacing_mm,) * 3, reference.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def place(canonical: sitk.Image, params: AnatomyParams) -> sitk.Image:
    """The canonical labels moved to this visit's position and deformation (nearest neighbour)."""
    return sitk.Resample(canonical, canonical, placement(params, canonical), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)


def build(grid: sitk.Image, params: AnatomyParams) -> sitk.Image:
    """The subject's label volume on ``grid`` as positioned for one visit."""
    return place(draw_canonical(grid, params), params)
