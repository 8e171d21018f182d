"""The study's published numbers that the phantom cohort plants (../shared/reference, Tables 1–5).

One place for every figure taken from the paper, keyed by the catalogue's muscle keys and
sides, so the cohort model, its tests and anyone checking a planted effect read the same
values. Where the paper gives no number the phantom needs (healthy control means of
strength, CMAP, MUSIX), the value is marked *assumed* and is a typical literature value.
Units: relative T2 and MUNIX differences in %, changes of relative T2 in %, dynamometry in
lb, CMAP in mV, MUSIX in µV, MUNIX in motor units, ALSFRS-R in points, weight in kg.
"""

from __future__ import annotations

MuscleSide = tuple[str, str]

# Table 1: mean % difference in relative T2, patients > controls, at baseline (every MR muscle).
TABLE1_RELT2_PCT: dict[MuscleSide, float] = {
    ("tibialis_anterior", "left"): 71.4, ("quadriceps", "left"): 42.1, ("quadriceps", "right"): 37.9,
    ("gastrocnemius_soleus", "left"): 37.8, ("gastrocnemius_soleus", "right"): 37.6,
    ("hamstrings", "right"): 36.3, ("hamstrings", "left"): 33.7, ("hypothenar", "right"): 31.3,
    ("tibialis_anterior", "right"): 30.4, ("thoracic_paraspinal", "right"): 26.9, ("hypothenar", "left"): 26.5,
    ("thoracic_paraspinal", "left"): 26.1, ("first_dorsal_interosseous", "right"): 24.7,
    ("biceps_brachii", "right"): 22.8, ("deltoid", "right"): 15.0, ("tongue", "none"): 11.4,
    ("first_dorsal_interosseous", "left"): 57.8, ("thenar", "left"): 24.1, ("thenar", "right"): 20.5,
    ("gluteus_maximus", "left"): 15.7, ("deltoid", "left"): 12.6, ("gluteus_maximus", "right"): 12.1,
    ("biceps_brachii", "left"): 11.6, ("trapezius", "left"): 10.4, ("triceps", "right"): 10.1,
    ("sternocleidomastoid", "right"): 8.7, ("sternocleidomastoid", "left"): 7.9, ("splenius_capitis", "none"): 5.2,
    ("psoas", "right"): 4.6, ("forearm", "left"): 3.2, ("psoas", "left"): 1.3, ("trapezius", "right"): 0.6,
    ("forearm", "right"): -8.9, ("triceps", "left"): -20.0,
}

# Table 1: proportion of patients with clinical weakness (MRC < 5) at baseline, by MR muscle.
TABLE1_WEAK_PROPORTION: dict[MuscleSide, float] = {
    ("tibialis_anterior", "left"): 0.43, ("quadriceps", "left"): 0.04, ("quadriceps", "right"): 0.04,
    ("gastrocnemius_soleus", "left"): 0.14, ("gastrocnemius_soleus", "right"): 0.11,
    ("hamstrings", "right"): 0.39, ("hamstrings", "left"): 0.36, ("hypothenar", "right"): 0.61,
    ("tibialis_anterior", "right"): 0.50, ("hypothenar", "left"): 0.82, ("first_dorsal_interosseous", "right"): 0.64,
    ("biceps_brachii", "right"): 0.21, ("deltoid", "right"): 0.39, ("first_dorsal_interosseous", "left"): 0.68,
    ("thenar", "left"): 0.50, ("thenar", "right"): 0.50, ("gluteus_maximus", "left"): 0.04,
    ("deltoid", "left"): 0.32, ("gluteus_maximus", "right"): 0.04, ("biceps_brachii", "left"): 0.11,
    ("triceps", "right"): 0.14, ("splenius_capitis", "none"): 0.03, ("psoas", "right"): 0.64,
    ("psoas", "left"): 0.64, ("triceps", "left"): 0.14,
}
WEAK_PROPORTION_OTHER = 0.30  # assumed: MRC groups with no MR muscle (wrist, finger, neck flexors)

# Table 5: mean % change in relative T2 from baseline to 4 and to 12 months (patients).
TABLE5_RELT2_CHANGE_PCT: dict[MuscleSide, tuple[float, float]] = {
    ("tongue", "none"): (-4.8, -2.4), ("trapezius", "right"): (-6.9, 0.2), ("trapezius", "left"): (-10.9, -1.7),
    ("sternocleidomastoid", "right"): (-3.7, 0.3), ("sternocleidomastoid", "left"): (-4.4, -4.1),
    ("splenius_capitis", "none"): (4.2, -5.4), ("deltoid", "right"): (2.7, -4.8), ("deltoid", "left"): (1.9, 4.6),
    ("biceps_brachii", "right"): (-2.2, 11.3), ("biceps_brachii", "left"): (-3.5, -1.9),
    ("triceps", "right"): (-13.9, -22.3), ("triceps", "left"): (0.0, 0.0),
    ("forearm", "right"): (7.3, 10.4), ("forearm", "left"): (7.0, 9.9),
    ("first_dorsal_interosseous", "right"): (18.4, 31.1), ("first_dorsal_interosseous", "left"): (-0.8, 16.1),
    ("thenar", "right"): (14.4, 21.4), ("thenar", "left"): (-8.7, -10.0),
    ("hypothenar", "right"): (5.5, 13.8), ("hypothenar", "left"): (3.1, 2.3),
    ("thoracic_paraspinal", "right"): (-1.0, 16.7), ("thoracic_paraspinal", "left"): (1.6, 4.2),
    ("psoas", "right"): (6.2, 35.7), ("psoas", "left"): (-11.8, -15.7),
    ("gluteus_maximus", "right"): (-3.0, 22.0), ("gluteus_maximus", "left"): (-14.2, -14.8),
    ("quadriceps", "right"): (5.4, 18.8), ("quadriceps", "left"): (1.2, 11.4),
    ("hamstrings", "right"): (-2.2, 17.4), ("hamstrings", "left"): (1.9, 14.4),
    ("tibialis_anterior", "right"): (10.7, 28.5), ("tibialis_anterior", "left"): (4.1, 20.9),
    ("gastrocnemius_soleus", "right"): (5.6, 18.9), ("gastrocnemius_soleus", "left"): (0.5, 18.7),
}

# Table 2: % difference patients vs controls at baseline (least-affected side), per ephys muscle.
TABLE2_PCT: dict[str, dict[str, float]] = {
    "MUNIX": {"abductor_pollicis_brevis": -50, "abductor_hallucis": -50, "extensor_digitorum_brevis": -44,
              "tibialis_anterior": -39, "biceps_brachii": -36, "abductor_digiti_minimi": -34},
    "MUSIX": {"abductor_pollicis_brevis": 17, "abductor_hallucis": -7, "extensor_digitorum_brevis": -21,
              "tibialis_anterior": 43, "biceps_brachii": 4, "abductor_digiti_minimi": 20},
    "CMAP": {"abductor_pollicis_brevis": -37.7, "abductor_hallucis": -41.5, "extensor_digitorum_brevis": -41.8,
             "tibialis_anterior": -22.2, "biceps_brachii": -30.2, "abductor_digiti_minimi": -29.4},
}

# Table 4: mean change from baseline to 4 and to 12 months in patients.
TABLE4_CLINICAL_CHANGE: dict[str, tuple[float, float]] = {"ALSFRS-R": (-3.4, -5.7), "weight": (-1.0, -2.5)}
# (weight change is assumed: the paper reports none)
TABLE4_DYNAMOMETRY_CHANGE: dict[MuscleSide, tuple[float, float]] = {
    ("first_dorsal_interosseous", "right"): (-1.1, -1.9), ("first_dorsal_interosseous", "left"): (-1.0, -2.0),
    ("abductor_pollicis_brevis", "right"): (-0.2, -1.5), ("abductor_pollicis_brevis", "left"): (-1.1, -2.1),
    ("abductor_digiti_minimi", "right"): (-0.6, -1.0), ("abductor_digiti_minimi", "left"): (-0.8, -1.4),
    ("quadriceps", "right"): (-3.1, -4.6), ("quadriceps", "left"): (-2.8, -3.6),
    ("tibialis_anterior", "right"): (-4.9, -10.7), ("tibialis_anterior", "left"): (-8.4, -9.3),
}
TABLE4_EPHYS_CHANGE: dict[str, dict[str, tuple[float, float]]] = {
    "MUNIX": {"biceps_brachii": (-19, -23), "abductor_pollicis_brevis": (-23, -33), "abductor_digiti_minimi": (-45, -66),
              "tibialis_anterior": (-11, -20), "abductor_hallucis": (-1, -28), "extensor_digitorum_brevis": (-2, -10)},
    "MUSIX": {"biceps_brachii": (2, 1), "abductor_pollicis_brevis": (5, 20), "abductor_digiti_minimi": (6, 33),
              "tibialis_anterior": (5, -3), "abductor_hallucis": (3, 8), "extensor_digitorum_brevis": (1, 5)},
    "CMAP": {"biceps_brachii": (-0.7, -1.2), "abductor_pollicis_brevis": (-1.1, -2.1),
             "abductor_digiti_minimi": (-1.2, -2.2), "tibialis_anterior": (-0.3, -1.0),
             "abductor_hallucis": (-0.6, -1.2), "extensor_digitorum_brevis": (-0.1, -0.7)},
}

# Table 3: patients' mean (SD) dynamometry (lb) and the clinico-radiological association
# (lb per unit of relative T2, baseline OLS).
TABLE3_DYNAMOMETRY: dict[MuscleSide, tuple[float, float, float]] = {  # mean, SD, coefficient
    ("first_dorsal_interosseous", "right"): (4.8, 3.5, -10.9), ("first_dorsal_interosseous", "left"): (4.7, 3.4, -6.6),
    ("abductor_pollicis_brevis", "right"): (6.4, 4.6, -13.7), ("abductor_pollicis_brevis", "left"): (7.0, 5.1, 6.0),
    ("abductor_digiti_minimi", "right"): (3.4, 2.1, -8.0), ("abductor_digiti_minimi", "left"): (2.9, 1.9, -6.4),
    ("quadriceps", "right"): (42.8, 11.5, -56.6), ("quadriceps", "left"): (43.6, 12.6, -51.2),
    ("tibialis_anterior", "right"): (34.0, 19.8, -93.0), ("tibialis_anterior", "left"): (36.5, 21.8, -108.1),
}
CONTROL_STRENGTH_RATIO = 1.3  # assumed: controls' mean strength / patients'
# Table 3: patients' mean (SD) MUNIX and the electrophysiological-radiological association
# (MUNIX per unit of relative T2); abductor hallucis and EDB have none in the paper (assumed).
TABLE3_MUNIX: dict[str, tuple[float, float, float]] = {
    "biceps_brachii": (129.3, 53.9, 9.7), "abductor_pollicis_brevis": (82.8, 52.2, -74.2),
    "abductor_digiti_minimi": (123.2, 68.0, -86.9), "tibialis_anterior": (83.5, 48.6, -232.0),
    "abductor_hallucis": (60.0, 35.0, 0.0), "extensor_digitorum_brevis": (45.0, 30.0, 0.0),
}
# Assumed healthy means (CMAP mV, MUSIX µV); SD as a fraction of the mean.
CONTROL_CMAP_MV: dict[str, float] = {"biceps_brachii": 10.0, "abductor_pollicis_brevis": 9.0,
                                     "abductor_digiti_minimi": 9.5, "tibialis_anterior": 6.0,
                                     "abductor_hallucis": 11.0, "extensor_digitorum_brevis": 6.0}
CONTROL_MUSIX_UV: dict[str, float] = {"biceps_brachii": 60.0, "abductor_pollicis_brevis": 60.0,
                                      "abductor_digiti_minimi": 70.0, "tibialis_anterior": 50.0,
                                      "abductor_hallucis": 70.0, "extensor_digitorum_brevis": 50.0}
EPHYS_CV = 0.2

# Demographics (Results): mean (SD).
PATIENT_AGE = (57.0, 14.0)
CONTROL_AGE = (54.0, 16.0)
PATIENT_WEIGHT = (78.0, 15.0)
CONTROL_WEIGHT = (75.0, 15.0)
ALSFRS_BASELINE = (40.0, 4.5)
PATIENT_FEMALES = 7  # of 29
CONTROL_FEMALES = 9  # of 22
ONSET_SITES = {"upper_limb": 14, "lower_limb": 11, "bulbar": 4}
GONE_BY_12_MONTHS = 16  # of 29 patients (Fig. 2)
# Follow-up (days from baseline): patients at median 19 and 55 weeks, controls at 29 weeks.
SCHEDULE_DAYS: dict[str, tuple[tuple[str, int], ...]] = {
    "patient": (("baseline", 0), ("m4", 133), ("m12", 385)),
    "control": (("baseline", 0), ("m6", 203)),
}
