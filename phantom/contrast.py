"""Tissue signal of the two sequences: T2-weighted FSE at TE 80 ms and STIR-prepared DWI.

Values are the scanner's floating-point signal in arbitrary units before coil gain and
receive bias: T2w FSE makes fat and fatty marrow bright, muscle dark, fluid very bright,
cortical bone and air dark. DWI (fat suppressed by inversion recovery) gives S0 per tissue
and an ADC per tissue (mm²/s) so that S(b) = S0·exp(−b·ADC).

Disease acts on muscle labels only: a multiplicative T2 signal factor (oedema / fatty
replacement), and an ADC factor; the DWI S0 of a muscle rises with the square root of its
T2 factor (T2 shine-through).
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
