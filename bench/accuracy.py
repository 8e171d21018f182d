"""Accuracy of the quantification against phantom truth; prints JSON.

For test subjects whose seeds are disjoint from the atlas subjects' (phantom/atlas_subjects.py uses
900 000+), each subject is scanned twice (``phantom rescan``: new position, coil gains and
noise), written as DICOM, read back with quant.volumes and quantified with the default
atlas. Reported:

- Dice per muscle (propagated labels vs the true labels, on the truth grid; for a partial protocol within the
  scanned field), medians overall and for the thigh and leg muscles;
- relative-T2 error vs truth per muscle: truth = the noise-free station signal ratio of the
  muscle to the reference marrow the pipeline chose, combined over stations like the
  pipeline (voxel count); median absolute error;
- scan–rescan coefficient of variation of relative T2 per muscle (within-subject SD / mean
  over the pairs);
- coil-gain cancellation: one subject's stations multiplied by 1.25 / 0.75 alternately,
  largest change of any relative T2 (same labels);
- ADC error vs the tissue's true ADC per axial muscle, median absolute (the b-values read from
  wherever the ``--vendor`` writes them: Philips standard + (2001,1003), Siemens (0019,100C), GE
  (0043,1039); ``--enhanced`` writes Enhanced MR instead);
- with ``--echoes`` the T2 is a multi-echo spin echo (the echo nearest 80 ms is measured, as the node does);
- with ``--dixon`` the phantom also writes a two-point Dixon and the pipeline measures fat fraction: its error
  vs the planted fat fraction (percentage points) per muscle, median absolute and the largest;
- with ``--layout lower_limbs`` the phantom scans the legs only (axial T2 of thighs and calves, slices with
  gaps, no DWI) and the pipeline measures them as the ``lower_limbs`` profile does (leg by leg, quant.partial):
  the same figures for the thigh and calf muscles.

The series are told apart by the node's own rules for the profile (node.intake.classify).

    python bench/accuracy.py [--subjects 3] [--size full|small] [--atlas DIR] [--vendor philips|siemens|ge]
                             [--enhanced] [--echoes 20,40,60,80,100,120] [--dixon]
                             [--layout whole_body|lower_limbs]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.intake.classify import classify_series
from node.settings import PROFILE_DEFAULTS, SeriesRule
from phantom.anatomy import LABELS
from phantom.contrast import MuscleState, lookup_tables
from phantom.default_atlas import ensure_default_atlas
from phantom.dicom import DicomOptions
from phantom.rescan import scan_rescan
from quant.atlas import load_atlas
from quant.fat import DixonStation, dixon_stations
from quant.params import QuantParams
from quant.pipeline import MeasurementRow, measure_t2, quantify
from quant.volumes import StationVolume, station_volumes
from storage.catalogue import PROFILE_MUSCLES, PROFILE_STATIONS, Modality, ScanProfile

LEG = {"quadriceps", "hamstrings", "tibialis_anterior", "gastrocnemius_soleus"}
TRUE_ADC = lookup_tables(MuscleState())[2]  # per label value, mm²/s (the healthy subjects here)
VALUE = {(lab.key, lab.side): lab.value for lab in LABELS}


def visit_volumes(folder: Path, profile: ScanProfile = ScanProfile.WHOLE_BODY
                  ) -> tuple[list[StationVolume], list[StationVolume], list[DixonStation]]:
    """T2 (of several echoes the one nearest 80 ms), DWI and Dixon stations of a phantom visit's DICOM."""
    rules = [SeriesRule(**rule) for rule in PROFILE_DEFAULTS[profile]["rules"]]  # type: ignore[attr-defined]
    kinds: dict[str, list] = {}  # type: ignore[type-arg]
    for path in sorted(p for p in (folder / "dicom").rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        kinds.setdefault(classify_series(ds, rules), []).append(ds)
    dixon, _ = dixon_stations(station_volumes(kinds.get("dixon_water", []), derived=True),
                              station_volumes(kinds.get("dixon_fat", []), derived=True))
    return station_volumes(kinds["t2"], echo_ms=80.0), station_volumes(kinds.get("dwi", [])), dixon


def truth_ratio(row: MeasurementRow, truth: dict) -> float:
    """The noise-free ratio the pipeline should have measured, combined over its stations like the pipeline."""
    signal, voxels = truth["station_signal"]["t2"], truth["station_voxels"]["t2"]
    v = str(VALUE[(row.muscle, row.side)])
    ratios, weights = [], []
    for station, ref in zip(row.stations, row.references):
        st = signal[str(station)]
        ref_v = str(VALUE[(ref, "none")])
        if v in st and ref_v in st:
            ratios.append(st[v] / st[ref_v])
            weights.append(voxels[str(station)][v])
    return float(np.average(ratios, weights=weights)) if ratios else float("nan")


def in_field(truth_labels: sitk.Image, stations: list[StationVolume]) -> np.ndarray:
    """The truth-grid voxels inside some T2 station's field (between its first and last slice)."""
    inside = np.zeros(sitk.GetArrayViewFromImage(truth_labels).shape, bool)
    for v in stations:
        ones = sitk.Image(v.image.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(v.image)
        inside |= sitk.GetArrayFromImage(sitk.Resample(ones, truth_labels, sitk.Transform(),
                                                       sitk.sitkNearestNeighbor, 0)) > 0
    return inside


def dice(propagated: sitk.Image, truth_labels: sitk.Image, covered: tuple[str, ...] | None = None,
         field: np.ndarray | None = None) -> dict[str, float]:
    """Dice per muscle on the truth grid; with ``field`` (a partial protocol) over the scanned field only — the
    muscles go on beyond it, where the protocol has no image and the pipeline no label."""
    on_truth = sitk.Resample(propagated, truth_labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    a, b = sitk.GetArrayFromImage(on_truth), sitk.GetArrayFromImage(truth_labels)
    if field is not None:
        a[~field], b[~field] = 0, 0
    out = {}
    for lab in LABELS:
        if lab.tissue != "muscle" or lab.key == "other_muscle" or (covered is not None and lab.key not in covered):
            continue
        x, y = a == lab.value, b == lab.value
        if y.any():
            out[f"{lab.key}:{lab.side}"] = float(2 * (x & y).sum() / (x.sum() + y.sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--size", default="full", choices=("full", "small"))
    ap.add_argument("--atlas", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--vendor", default="philips", choices=("philips", "siemens", "ge"))
    ap.add_argument("--enhanced", action="store_true")
    ap.add_argument("--echoes", default="", help="multi-echo T2: echo times (ms), comma-separated, 80 among them")
    ap.add_argument("--dixon", action="store_true", help="also a Dixon: fat fraction measured against its truth")
    ap.add_argument("--layout", default="whole_body", choices=("whole_body", "lower_limbs"))
    args = ap.parse_args()
    profile = ScanProfile(args.layout)
    covered = None if profile is ScanProfile.WHOLE_BODY else PROFILE_MUSCLES[profile]
    station_muscles = PROFILE_STATIONS.get(profile)
    echoes = tuple(float(v) for v in args.echoes.split(",")) if args.echoes else ()
    work = args.work or Path(tempfile.mkdtemp(prefix="myonode-accuracy-"))
    atlas = load_atlas(args.atlas or ensure_default_atlas(3))
    settings = QuantParams()
    dices: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    pairs: dict[str, list[tuple[float, float]]] = {}
    gain_change = 0.0
    adc_errors: dict[str, list[float]] = {}
    ff_errors: dict[str, list[float]] = {}
    seconds = []
    for k in range(args.subjects):
        seed = 1 + k
        scan, rescan = scan_rescan(work / f"subject{seed}", seed, args.size, f"ACC{seed:03d}",
                                   options=DicomOptions(vendor=args.vendor, enhanced=args.enhanced),
                                   echoes_ms=echoes, dixon=args.dixon, layout=args.layout)
        values = []
        for session in (scan, rescan):
            t2, dwi, dixon = visit_volumes(session.truth_path.parent, profile)
            t0 = time.perf_counter()
            q = quantify(t2, dwi, atlas, settings, covered=covered, station_muscles=station_muscles, dixon=dixon)
            seconds.append(time.perf_counter() - t0)
            truth = json.loads(session.truth_path.read_text())
            truth_labels = sitk.ReadImage(str(session.labels_path))
            field = in_field(truth_labels, t2) if covered is not None else None
            for key, d in dice(q.subject_labels, truth_labels, covered, field).items():
                dices.setdefault(key, []).append(d)
            rel = {}
            for row in q.rows:
                if row.modality is Modality.ADC:
                    true_adc = float(TRUE_ADC[VALUE[(row.muscle, row.side)]])
                    adc_errors.setdefault(f"{row.muscle}:{row.side}", []).append(
                        100.0 * (row.value - true_adc) / true_adc)
                if row.modality is Modality.FF:
                    true_ff = truth["fat_fraction"][str(VALUE[(row.muscle, row.side)])]
                    ff_errors.setdefault(f"{row.muscle}:{row.side}", []).append(row.value - true_ff)
                if row.modality is not Modality.REL_T2:
                    continue
                key = f"{row.muscle}:{row.side}"
                t = truth_ratio(row, truth)
                errors.setdefault(key, []).append(100.0 * (row.value - t) / t)
                rel[key] = row.value
            values.append(rel)
            if k == 0 and session is scan:
                scaled = [StationVolume(image=v.image * (1.25 if i % 2 else 0.75), series_uid=v.series_uid, station_key=v.station_key, b_value=None, sop_uids=[], frame_numbers=[])
                          for i, v in enumerate(t2)]
                again, _, _ = measure_t2(scaled, q.subject_labels, atlas, settings, covered=covered)
                base = {(r.muscle, r.side): r.value for r in q.rows if r.modality is Modality.REL_T2}
                gain_change = max(abs(r.value / base[(r.muscle, r.side)] - 1) for r in again) * 100
        for key in set(values[0]) & set(values[1]):
            pairs.setdefault(key, []).append((values[0][key], values[1][key]))

    def cov(p: list[tuple[float, float]]) -> float:
        arr = np.asarray(p)
        within_sd = np.sqrt(np.mean((arr[:, 0] - arr[:, 1]) ** 2 / 2))
        return float(100 * within_sd / arr.mean())

    dice_median = {k: float(np.median(v)) for k, v in dices.items()}
    err_median = {k: float(np.median(np.abs(v))) for k, v in errors.items()}
    covs = {k: cov(v) for k, v in pairs.items()}
    leg = [v for k, v in dice_median.items() if k.split(":")[0] in LEG]
    print(json.dumps({
        "benchmark": "accuracy", "date": date.today().isoformat(), "size": args.size, "subjects": args.subjects,
        "atlas": atlas.id,
        "layout": args.layout,
        "dice_median_all": float(np.median(list(dice_median.values()))),
        "dice_median_thigh_leg": float(np.median(leg)), "dice_min_thigh_leg": float(np.min(leg)),
        "relT2_abs_error_pct_median": float(np.median(list(err_median.values()))),
        "relT2_abs_error_pct_max_muscle": max(err_median.items(), key=lambda kv: kv[1]),
        "rescan_cov_pct_max_leg": max(v for k, v in covs.items() if k.split(":")[0] in LEG),
        "rescan_cov_pct_max_all": max(covs.values()),
        "muscles_over_5pct_cov": sorted(k for k, v in covs.items() if v > 5),
        "coil_gain_25pct_max_change_pct": gain_change,
        "vendor": args.vendor, "enhanced": args.enhanced, "echoes_ms": list(echoes), "dixon": args.dixon,
        **({"ff_abs_error_pp_median": float(np.median([np.median(np.abs(v)) for v in ff_errors.values()])),
            "ff_abs_error_pp_max_muscle": max(((k, float(np.median(np.abs(v)))) for k, v in ff_errors.items()),
                                              key=lambda kv: kv[1]),
            "ff_muscles": len(ff_errors)} if ff_errors else {}),
        "adc_abs_error_pct_median": (float(np.median([np.median(np.abs(v)) for v in adc_errors.values()]))
                                     if adc_errors else None),
        "seconds_per_visit_median": float(np.median(seconds)),
        "dice": dice_median, "relT2_error_pct": err_median, "rescan_cov_pct": covs,
    }, indent=1))


if __name__ == "__main__":
    main()
