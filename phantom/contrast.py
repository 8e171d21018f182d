"""Tissue signal of the two sequences: T2-weighted FSE at TE 80 ms and STIR-prepared DWI.

Values are the scanner's floating-point signal in arbitrary units before coil gain and
receive bias: T2w FSE makes fat and fatty marrow bright, muscle dark, fluid very bright,
cortical bone and air dark. DWI (fat suppressed by inversion recovery) gives S0 per tissue
and an ADC per tissue (mm²/s) so that S(b) = S0·exp(−b·ADC).

Disease acts on muscle labels only: a multiplicative T2 signal factor (oedema / fatty
replacement), and an ADC factor; the DWI S0 of a muscle rises with the square root of its
T2 factor (T2 shine-through).

A multi-echo spin echo samples each tissue's decay S(TE) = S(80)·exp(−(TE − 80)/T2) with the
tissue's apparent T2 (:data:`RELAXATION_T2_MS`); a diseased muscle's signal at 80 ms rises by its T2
factor f at the same proton density, so its T2 is 80 / (80 / T2 − ln f). A two-point Dixon gives
water and fat images W = PD·(1 − FF), F = PD·FF per tissue (:data:`DIXON_PD`, :data:`FAT_FRACTION`);
a diseased muscle's fat fraction rises with its T2 factor (fatty replacement,
:data:`FAT_FRACTION_PER_T2`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from phantom.anatomy import LABELS, MUSCLE_LABEL_BASE
from storage.catalogue import MUSCLES

# tissue → (T2w signal, DWI S0, ADC mm²/s)
TISSUE: dict[str, tuple[float, float, float]] = {
    "air": (0.0, 0.0, 0.0),
    "skin": (420.0, 120.0, 1.0e-3),
    "fat": (1000.0, 30.0, 0.1e-3),
    "bone": (15.0, 5.0, 0.1e-3),
    "muscle": (220.0, 300.0, 1.5e-3),
    "brain": (460.0, 500.0, 0.8e-3),
    "fluid": (1500.0, 800.0, 3.0e-3),
    "lung": (25.0, 10.0, 1.0e-3),
    "liver": (180.0, 250.0, 1.1e-3),
    "soft": (340.0, 350.0, 1.2e-3),
}
# Marrow compartments differ: vertebral red marrow is darker than fatty long-bone marrow.
MARROW: dict[str, tuple[float, float, float]] = {
    "marrow_vertebra": (620.0, 60.0, 0.45e-3),
    "marrow_humerus": (880.0, 40.0, 0.3e-3),
    "marrow_forearm": (900.0, 40.0, 0.3e-3),
    "marrow_pelvis": (760.0, 50.0, 0.4e-3),
    "marrow_femur": (900.0, 40.0, 0.3e-3),
    "marrow_tibia": (920.0, 40.0, 0.3e-3),
}


# Apparent T2 (ms) per tissue of the multi-echo spin echo (fat's multi-peak decay as one exponential) and marrow
# compartments (fat-dominated).
T2_ECHO_MS = 80.0  # the echo time the T2w signal above is given at
RELAXATION_T2_MS: dict[str, float] = {
    "air": 50.0, "skin": 40.0, "fat": 130.0, "bone": 10.0, "muscle": 35.0, "brain": 90.0, "fluid": 700.0,
    "lung": 20.0, "liver": 45.0, "soft": 60.0, "marrow": 120.0,
}
# Dixon proton-density signal (a.u.) and fat fraction per tissue; marrow compartments by their fat content.
DIXON_PD: dict[str, float] = {
    "air": 0.0, "skin": 500.0, "fat": 1000.0, "bone": 20.0, "muscle": 600.0, "brain": 650.0, "fluid": 900.0,
    "lung": 30.0, "liver": 600.0, "soft": 600.0, "marrow": 950.0,
}
FAT_FRACTION: dict[str, float] = {
    "air": 0.0, "skin": 0.2, "fat": 0.95, "bone": 0.2, "muscle": 0.03, "brain": 0.0, "fluid": 0.0, "lung": 0.0,
    "liver": 0.05, "soft": 0.1, "marrow": 0.85,
}
MARROW_FAT_FRACTION: dict[str, float] = {"marrow_vertebra": 0.45, "marrow_pelvis": 0.6}
FAT_FRACTION_PER_T2 = 0.2  # rise of a muscle's fat fraction per unit rise of its T2 factor


def healthy_muscle_signal(key: str) -> float:
    """T2w signal of a healthy muscle: muscles differ a little (fibre type, fat content), ±8 %."""
    i = [m.key for m in MUSCLES].index(key)
    return TISSUE["muscle"][0] * (0.92 + 0.16 * ((i * 7) % 11) / 10.0)


@dataclass(frozen=True, kw_only=True)
class MuscleState:
    """Disease state of every muscle label at one visit; missing entries are healthy (1.0)."""

    t2_factor: Mapping[tuple[str, str], float] = field(default_factory=dict)
    adc_factor: Mapping[tuple[str, str], float] = field(default_factory=dict)


def lookup_tables(state: MuscleState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label value (0–255): T2w signal, DWI S0 and ADC (mm²/s), float32."""
    t2 = np.zeros(256, np.float32)
    s0 = np.zeros(256, np.float32)
    adc = np.zeros(256, np.float32)
    for lab in LABELS:
        if lab.value >= MUSCLE_LABEL_BASE:
            f = state.t2_factor.get((lab.key, lab.side), 1.0)
            t2[lab.value] = healthy_muscle_signal(lab.key) * f
            s0[lab.value] = TISSUE["muscle"][1] * np.sqrt(f)
            adc[lab.value] = TISSUE["muscle"][2] * state.adc_factor.get((lab.key, lab.side), 1.0)
        else:
            t2[lab.value], s0[lab.value], adc[lab.value] = MARROW.get(lab.key, TISSUE[lab.tissue if lab.tissue != "marrow" else "fat"])
    return t2, s0, adc


def _tissue(lab_tissue: str) -> str:
    return lab_tissue if lab_tissue in RELAXATION_T2_MS else "soft"


def echo_lookup_table(state: MuscleState, echo_ms: float) -> np.ndarray:
    """Per label value (0–255): the multi-echo spin echo's signal at ``echo_ms`` (float32); at 80 ms exactly the
    T2w table of :func:`lookup_tables`."""
    t2_lut = lookup_tables(state)[0].astype(np.float64)
    decay = np.ones(256)
    for lab in LABELS:
        t2 = RELAXATION_T2_MS[_tissue(lab.tissue)]
        if lab.value >= MUSCLE_LABEL_BASE:
            f = state.t2_factor.get((lab.key, lab.side), 1.0)
            t2 = T2_ECHO_MS / (T2_ECHO_MS / t2 - float(np.log(f)))
        decay[lab.value] = np.exp(-(echo_ms - T2_ECHO_MS) / t2)
    return (t2_lut * decay).astype(np.float32)


def fat_fraction_table(state: MuscleState) -> np.ndarray:
    """Per label value (0–255): the true fat fraction (0–1) a Dixon measures."""
    ff = np.zeros(256)
    for lab in LABELS:
        if lab.value >= MUSCLE_LABEL_BASE:
            f = state.t2_factor.get((lab.key, lab.side), 1.0)
            ff[lab.value] = np.clip(FAT_FRACTION["muscle"] + FAT_FRACTION_PER_T2 * (f - 1.0), 0.01, 0.9)
        else:
            ff[lab.value] = MARROW_FAT_FRACTION.get(lab.key, FAT_FRACTION[_tissue(lab.tissue)])
    return ff


def dixon_lookup_tables(state: MuscleState) -> tuple[np.ndarray, np.ndarray]:
    """Per label value (0–255): the Dixon water and fat signal (float32)."""
    pd = np.zeros(256)
    for lab in LABELS:
        pd[lab.value] = DIXON_PD[_tissue(lab.tissue)]
    ff = fat_fraction_table(state)
    return (pd * (1 - ff)).astype(np.float32), (pd * ff).astype(np.float32)
