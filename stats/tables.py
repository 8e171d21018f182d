"""The paper's Tables 1–5, predictors, MRC tests and demographics as DataFrames (pure functions).

Definitions (the statistics issue; the paper's Methods):
- Between-group (table1, table1_adc, table2): OLS ``value ~ patient + age + female``;
  pct_diff = 100·b_patient / m_c with m_c the predicted control mean at the sample means of
  age and female; Fieller CI (t quantile, residual df); p of b_patient.
- Proportion weak (table1): baseline patients with MRC < 5 in the corresponding MRC muscle.
- Associations (table3): baseline patients, OLS ``dynamometry|MUNIX ~ relT2 + age + female``.
- Longitudinal (table4, table5, table5_adc): per group, ML random-intercept model
  ``value ~ C(visit)``; Wald CI and z-test p; pct_change = 100·coef/intercept with Fieller CI
  (z); var_ratio = σ²_subject/(σ²_subject + σ²_residual); SRM = mean(Δ)/sd(Δ) for Δ = last
  visit − baseline.
- Electrophysiology is measured on one side per subject (least affected in patients, right
  in controls), so MUNIX, MUSIX and CMAP are analysed per muscle over the side tested
  (side = "tested"); a subject with several sides contributes their mean.
- Benjamini–Hochberg within each table, separately per group and visit where present.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from stats.fieller import fieller
from stats.mixed import fit_random_intercept
from stats.multiplicity import benjamini_hochberg
from stats.proportion import proportion_ci
from stats.ranks import chi2_independence, signrank
from storage.catalogue import (
    COMPOSITES,
    MRC_MUSCLES,
    MUSCLE_BY_KEY,
    MUSCLES,
    ONSET_MUSCLE,
    ONSET_REGIONS,
    dynamometry_muscle,
    mrc_sides,
)

EPHYS = ("MUNIX", "MUSIX", "CMAP")
MIN_PER_GROUP = 2
LONG_COLUMNS = ["group", "measure", "muscle", "side", "visit", "n_subjects", "n_obs", "coef", "ci_low", "ci_high",
                "pct_change", "pct_ci_low", "pct_ci_high", "p", "p_bh", "sig_bh", "srm", "var_ratio", "converged"]


# --- shaping -----------------------------------------------------------------------------


def pool_tested_side(obs: pd.DataFrame) -> pd.DataFrame:
    """Electrophysiology rows with side replaced by "tested" (mean over sides per subject and visit)."""
    ephys = obs[obs["measure"].isin(EPHYS)]
    if ephys.empty:
        return obs
    pooled = (ephys.groupby(["subject_id", "visit", "measure", "muscle"], as_index=False)
              .agg(value=("value", "mean"), days=("days", "first")))
    pooled["side"] = "tested"
    return pd.concat([obs[~obs["measure"].isin(EPHYS)], pooled[obs.columns]], ignore_index=True)


def add_composites(obs: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """Append relT2 composites: summary_mean (everyone), region_of_onset and muscle_of_onset (patients)."""
    rel = obs[(obs["measure"] == "relT2") & ~obs["muscle"].isin(COMPOSITES)].dropna(subset=["value"])
    if rel.empty:
        return obs
    info = subjects.set_index("subject_id")
    rows = []
    for (sid, visit), part in rel.groupby(["subject_id", "visit"]):
        days = float(part["days"].iloc[0])
        rows.append((sid, visit, days, "summary_mean", float(part["value"].mean())))
        s = info.loc[sid]
        if s["group"] != "patient" or s["onset_site"] not in ONSET_REGIONS:
            continue
        sides = ("left", "right", "none") if s["onset_site"] == "bulbar" or not s["onset_side"] else (s["onset_side"], "none")
        region = part[part["muscle"].isin(ONSET_REGIONS[s["onset_site"]]) & part["side"].isin(sides)]
        if not region.empty:
            rows.append((sid, visit, days, "region_of_onset", float(region["value"].mean())))
        onset_key = ONSET_MUSCLE[s["onset_site"]]
        onset_side = "none" if not MUSCLE_BY_KEY[onset_key].paired else s["onset_side"]
        muscle = part[(part["muscle"] == onset_key) & (part["side"] == onset_side)]
        if not muscle.empty:
            rows.append((sid, visit, days, "muscle_of_onset", float(muscle["value"].iloc[0])))
    comp = pd.DataFrame(rows, columns=["subject_id", "visit", "days", "muscle", "value"])
    comp["measure"], comp["side"] = "relT2", "none"
    return pd.concat([obs, comp[obs.columns]], ignore_index=True)


def _with_subjects(obs: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    return obs.merge(subjects[["subject_id", "group", "patient", "age", "female"]], on="subject_id", how="left")


def _order(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(muscle, side) in catalogue order, composites last."""
    rank = {m.key: i for i, m in enumerate(MUSCLES)} | {c: 100 + i for i, c in enumerate(COMPOSITES)}
    side_rank = {"right": 0, "left": 1, "none": 2, "tested": 3}
    return sorted(set(keys), key=lambda k: (rank.get(k[0], 50), k[0], side_rank.get(k[1], 9)))


def _bh(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if frame.empty:
        frame["p_bh"], frame["sig_bh"] = [], []
        return frame
    if by:
        frame["p_bh"] = frame.groupby(by, group_keys=False)["p"].apply(benjamini_hochberg)
    else:
        frame["p_bh"] = benjamini_hochberg(frame["p"])
    frame["sig_bh"] = frame["p_bh"].map(lambda v: "" if pd.isna(v) else str(bool(v < 0.05)).lower())
    return frame


# --- models ------------------------------------------------------------------------------


def _ols(y: np.ndarray, X: np.ndarray):
    return sm.OLS(y, X).fit()


def _design(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Intercept plus the given columns, leaving out covariates that do not vary in this sample
    (e.g. female when every subject is male), which would make the model rank-deficient."""
    n = len(next(iter(columns.values())))
    kept = {k: np.asarray(v, dtype=float) for k, v in columns.items() if k not in ("age", "female") or np.ptp(v) > 0}
    return np.column_stack([np.ones(n), *kept.values()]), ["intercept", *kept]


def between_groups(data: pd.DataFrame) -> dict[str, float]:
    """OLS value ~ patient + age + female: pct difference with Fieller CI and p of b_patient."""
    d = data.dropna(subset=["value", "age", "female"])
    n_p, n_c = int((d["patient"] == 1).sum()), int((d["patient"] == 0).sum())
    out = {"n_patients": n_p, "n_controls": n_c, "pct_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p": math.nan}
    if n_p < MIN_PER_GROUP or n_c < MIN_PER_GROUP or len(d) < 5:
        return out
    X, names = _design({"patient": d["patient"], "age": d["age"], "female": d["female"]})
    fit = _ols(d["value"].to_numpy(float), X)
    cov = np.asarray(fit.cov_params())
    means = {"intercept": 1.0, "patient": 0.0, "age": d["age"].mean(), "female": d["female"].mean()}
    c = np.array([means[k] for k in names])  # control mean at the sample means of the covariates
    e = np.array([1.0 if k == "patient" else 0.0 for k in names])
    b, m_c = float(fit.params[1]), float(c @ fit.params)
    q = stats.t.ppf(0.975, fit.df_resid)
    ci = fieller(b, m_c, float(e @ cov @ e), float(c @ cov @ c), float(e @ cov @ c), q)
    out.update(pct_diff=100 * ci.ratio, ci_low=100 * ci.low, ci_high=100 * ci.high, p=float(fit.pvalues[1]))
    return out


def association(y: np.ndarray, x: np.ndarray, age: np.ndarray, female: np.ndarray) -> dict[str, float]:
    """OLS y ~ x + age + female: coefficient of x with t-based CI and p."""
    X, _ = _design({"x": x, "age": age, "female": female})
    fit = _ols(y, X)
    low, high = np.asarray(fit.conf_int())[1]
    return {"n": len(y), "coef": float(fit.params[1]), "ci_low": float(low), "ci_high": float(high),
            "p": float(fit.pvalues[1])}


# --- tables ------------------------------------------------------------------------------


def table_between(obs: pd.DataFrame, subjects: pd.DataFrame, measures: tuple[str, ...], baseline: str, *,
                  with_proportion: bool) -> pd.DataFrame:
    """Patients vs controls at ``baseline`` for each of ``measures`` × muscle × side (% difference,
    Fieller CI, p, BH); ``with_proportion`` adds the proportion of weak (MRC < 5) patient muscles."""
    base = _with_subjects(obs[(obs["visit"] == baseline) & obs["measure"].isin(measures)], subjects)
    mrc = obs[(obs["visit"] == baseline) & (obs["measure"] == "MRC")].merge(
        subjects[["subject_id", "group"]], on="subject_id")
    mrc = mrc[mrc["group"] == "patient"].dropna(subset=["value"])
    rows = []
    for measure in measures:
        part = base[base["measure"] == measure]
        # Region and muscle of onset exist for patients only: nothing to compare with.
        part = part[~part["muscle"].isin(("region_of_onset", "muscle_of_onset"))]
        for muscle, side in _order(zip(part["muscle"], part["side"])):
            row = {"measure": measure, "muscle": muscle, "side": side,
                   **between_groups(part[(part["muscle"] == muscle) & (part["side"] == side)])}
            if with_proportion:
                k = n = 0
                clinical = MUSCLE_BY_KEY[muscle].mrc if muscle in MUSCLE_BY_KEY else None
                if clinical is not None:
                    mside = side if side in mrc_sides(clinical) else "none"
                    values = mrc[(mrc["muscle"] == clinical) & (mrc["side"] == mside)]["value"]
                    n, k = int(values.size), int((values < 5).sum())
                prop = proportion_ci(k, n)
                row.update(n_weak=k if n else math.nan, n_mrc=n if n else math.nan, prop_weak=prop.p,
                           prop_ci_low=prop.low, prop_ci_high=prop.high)
            rows.append(row)
    columns = ["measure", "muscle", "side", "n_patients", "n_controls", "pct_diff", "ci_low", "ci_high", "p"]
    frame = pd.DataFrame(rows, columns=columns + (["n_weak", "n_mrc", "prop_weak", "prop_ci_low", "prop_ci_high"]
                                                   if with_proportion else []))
    frame = _bh(frame, [])
    order = columns + ["p_bh", "sig_bh"] + (["n_weak", "n_mrc", "prop_weak", "prop_ci_low", "prop_ci_high"]
                                            if with_proportion else [])
    return frame[order]


def table1(obs: pd.DataFrame, subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Table 1: relative T2 of patients vs controls at baseline, with the proportion of weak muscles."""
    return table_between(obs, subjects, ("relT2",), baseline, with_proportion=True)


def table1_adc(obs: pd.DataFrame, subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Table 1 for ADC (the paper reports it in the text)."""
    return table_between(obs, subjects, ("ADC",), baseline, with_proportion=False)


def table1_ff(obs: pd.DataFrame, subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Table 1 for the Dixon fat fraction (not in the paper: measured where a protocol has Dixon images; empty
    otherwise)."""
    return table_between(obs, subjects, ("FF",), baseline, with_proportion=False)


def table2(obs: pd.DataFrame, subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Table 2: electrophysiology (CMAP, MUNIX, MUSIX) of patients vs controls at baseline."""
    return table_between(obs, subjects, EPHYS, baseline, with_proportion=False)


def table4(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str], notes: list[str]) -> pd.DataFrame:
    """Table 4: change of the clinical and electrophysiological measures over the visits."""
    return longitudinal(obs, subjects, ("ALSFRS-R", "MRC_sum", "dynamometry", *EPHYS, "weight"), visits,
                        percent=False, notes=notes)


def table5(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str], notes: list[str]) -> pd.DataFrame:
    """Table 5: change of relative T2 over the visits, also as % of baseline."""
    return longitudinal(obs, subjects, ("relT2",), visits, percent=True, notes=notes)


def table5_adc(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str], notes: list[str]) -> pd.DataFrame:
    """Table 5 for ADC."""
    return longitudinal(obs, subjects, ("ADC",), visits, percent=True, notes=notes)


def table5_ff(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str], notes: list[str]) -> pd.DataFrame:
    """Table 5 for the Dixon fat fraction (change in percentage points; empty without Dixon measurements)."""
    return longitudinal(obs, subjects, ("FF",), visits, percent=False, notes=notes)


def table3(obs: pd.DataFrame, subjects: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Table 3: association of dynamometry and MUNIX with relative T2 of the same muscle and side (patients)."""
    base = obs[obs["visit"] == baseline]
    patients = subjects[subjects["group"] == "patient"].set_index("subject_id")
    rel = base[base["measure"] == "relT2"].set_index(["subject_id", "muscle", "side"])["value"]
    rows = []
    for measure in ("dynamometry", "MUNIX"):
        part = base[base["measure"] == measure]
        for m in MUSCLES:
            clinical = dynamometry_muscle(m.key) if measure == "dynamometry" else m.ephys
            if clinical is None:
                continue
            for side in m.sides:
                ys, xs, ages, fem = [], [], [], []
                for _, r in part[(part["muscle"] == clinical) & (part["side"] == side)].iterrows():
                    if r["subject_id"] not in patients.index or pd.isna(r["value"]):
                        continue
                    x = rel.get((r["subject_id"], m.key, side))
                    if x is None or pd.isna(x):
                        continue
                    ys.append(r["value"])
                    xs.append(x)
                    ages.append(patients.loc[r["subject_id"], "age"])
                    fem.append(patients.loc[r["subject_id"], "female"])
                if len(ys) < 5:
                    continue
                rows.append({"measure": measure, "muscle": m.key, "side": side,
                             **association(np.array(ys), np.array(xs), np.array(ages), np.array(fem))})
    frame = pd.DataFrame(rows, columns=["measure", "muscle", "side", "n", "coef", "ci_low", "ci_high", "p"])
    return _bh(frame, [])


def longitudinal(obs: pd.DataFrame, subjects: pd.DataFrame, measures: tuple[str, ...], visits: list[str], *,
                 percent: bool, notes: list[str]) -> pd.DataFrame:
    """Change from the first visit, per group × measure × muscle × side, by a random-intercept model;
    ``percent`` adds the change as % of baseline (Fieller); model notes are appended to ``notes``."""
    data = _with_subjects(obs[obs["measure"].isin(measures)], subjects).dropna(subset=["value"])
    rows = []
    for group in ("patient", "control"):
        gdata = data[data["group"] == group]
        for measure in measures:
            mdata = gdata[gdata["measure"] == measure]
            for muscle, side in _order(zip(mdata["muscle"], mdata["side"])):
                part = mdata[(mdata["muscle"] == muscle) & (mdata["side"] == side)]
                present = [v for v in visits if (part["visit"] == v).any()]
                if len(present) < 2 or present[0] != visits[0]:
                    continue
                label = f"{group} {measure} {muscle or '-'} {side}"
                try:
                    fit = fit_random_intercept(part, present)
                except (ValueError, np.linalg.LinAlgError) as exc:
                    notes.append(f"{label}: not fitted: {exc}")
                    continue
                notes.extend(f"{label}: {n}" for n in fit.notes)
                if not fit.converged:
                    notes.append(f"{label}: did not converge")
                wide = part.pivot_table(index="subject_id", columns="visit", values="value", aggfunc="first")
                last = present[-1]
                delta = (wide[last] - wide[present[0]]).dropna() if last in wide else pd.Series(dtype=float)
                srm = float(delta.mean() / delta.std(ddof=1)) if len(delta) >= 2 and delta.std(ddof=1) > 0 else math.nan
                for i, visit in enumerate(present[1:], start=1):
                    low, high, p = fit.wald(i)
                    row = {"group": group, "measure": measure, "muscle": muscle, "side": side, "visit": visit,
                           "n_subjects": int(part[part["visit"] == visit]["subject_id"].nunique()),
                           "n_obs": fit.n_obs, "coef": float(fit.beta[i]), "ci_low": low, "ci_high": high,
                           "pct_change": math.nan, "pct_ci_low": math.nan, "pct_ci_high": math.nan, "p": p,
                           "srm": srm, "var_ratio": fit.var_ratio, "converged": str(fit.converged).lower()}
                    if percent:
                        ci = fieller(float(fit.beta[i]), float(fit.beta[0]), float(fit.cov[i, i]),
                                     float(fit.cov[0, 0]), float(fit.cov[i, 0]), stats.norm.ppf(0.975))
                        if not ci.bounded:
                            notes.append(f"{label} {visit}: Fieller interval of % change is unbounded")
                        row.update(pct_change=100 * ci.ratio, pct_ci_low=100 * ci.low, pct_ci_high=100 * ci.high)
                    rows.append(row)
    frame = pd.DataFrame(rows, columns=[c for c in LONG_COLUMNS if c not in ("p_bh", "sig_bh")])
    frame = _bh(frame, ["group", "visit"])
    return frame[LONG_COLUMNS]


def predictors(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str]) -> pd.DataFrame:
    patients = set(subjects.loc[subjects["group"] == "patient", "subject_id"])
    mrc = obs[(obs["measure"] == "MRC") & obs["subject_id"].isin(patients)]
    mrc_w = mrc.pivot_table(index=["subject_id", "muscle", "side"], columns="visit", values="value", aggfunc="first")
    rel = obs[(obs["measure"] == "relT2") & (obs["visit"] == visits[0])].set_index(
        ["subject_id", "muscle", "side"])["value"]
    rows = []
    for visit in visits[1:]:
        if visit not in mrc_w or visits[0] not in mrc_w:
            continue
        for m in MUSCLES:
            if m.mrc is None:
                continue
            for side in m.sides:
                mside = side if side in mrc_sides(m.mrc) else "none"
                for subset in ("all", "strong"):
                    xs, ys = [], []
                    for sid in sorted(patients):
                        key = (sid, m.mrc, mside)
                        if key not in mrc_w.index:
                            continue
                        b0, bv = mrc_w.loc[key, visits[0]], mrc_w.loc[key, visit]
                        x = rel.get((sid, m.key, side))
                        if pd.isna(b0) or pd.isna(bv) or x is None or pd.isna(x):
                            continue
                        if subset == "strong" and b0 < 5:
                            continue
                        xs.append(x)
                        ys.append(bv - b0)
                    if len(xs) < 3 or np.ptp(xs) == 0:
                        continue
                    fit = _ols(np.array(ys, float), np.column_stack([np.ones(len(xs)), xs]))
                    low, high = np.asarray(fit.conf_int())[1]
                    rows.append({"subset": subset, "visit": visit, "muscle": m.key, "side": side, "n": len(xs),
                                 "coef": float(fit.params[1]), "ci_low": float(low), "ci_high": float(high),
                                 "p": float(fit.pvalues[1]) if np.ptp(ys) > 0 else math.nan})
    frame = pd.DataFrame(rows, columns=["subset", "visit", "muscle", "side", "n", "coef", "ci_low", "ci_high", "p"])
    return _bh(frame, ["subset", "visit"])


def mrc_wilcoxon(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str]) -> pd.DataFrame:
    patients = set(subjects.loc[subjects["group"] == "patient", "subject_id"])
    data = obs[obs["measure"].isin(["MRC", "MRC_sum"]) & obs["subject_id"].isin(patients)].dropna(subset=["value"])
    wide = data.pivot_table(index=["measure", "muscle", "side", "subject_id"], columns="visit", values="value",
                            aggfunc="first")
    rows = []
    keys = [("MRC_sum", "", "none")] + [("MRC", mk, s) for mk in MRC_MUSCLES for s in mrc_sides(mk)]
    for measure, muscle, side in keys:
        if (measure, muscle, side) not in wide.index.droplevel("subject_id"):
            continue
        part = wide.loc[(measure, muscle, side)]
        for visit in visits[1:]:
            if visit not in part or visits[0] not in part:
                continue
            pairs = part[[visits[0], visit]].dropna()
            if pairs.empty:
                continue
            rows.append({"muscle": muscle or "MRC_sum", "side": side, "visit": visit, "n": len(pairs),
                         "median_baseline": float(pairs[visits[0]].median()),
                         "median_visit": float(pairs[visit].median()),
                         "p": signrank(pairs[visits[0]].to_numpy(), pairs[visit].to_numpy())})
    frame = pd.DataFrame(rows, columns=["muscle", "side", "visit", "n", "median_baseline", "median_visit", "p"])
    return _bh(frame, ["visit"])


def demographics(obs: pd.DataFrame, subjects: pd.DataFrame, visits: list[str]) -> pd.DataFrame:
    """Age and baseline weight (OLS on group), sex (chi-squared), onset sites, subjects per visit."""
    rows = []
    weight = obs[(obs["measure"] == "weight") & (obs["visit"] == visits[0])][["subject_id", "value"]]
    for variable, frame in (("age", subjects.assign(value=subjects["age"])),
                            ("weight", subjects.merge(weight, on="subject_id"))):
        d = frame.dropna(subset=["value"])
        p = math.nan
        if d["patient"].nunique() == 2 and len(d) > 2:
            p = float(_ols(d["value"].to_numpy(float), np.column_stack([np.ones(len(d)), d["patient"]])).pvalues[1])
        for group in ("patient", "control"):
            g = d[d["group"] == group]["value"]
            rows.append({"variable": variable, "level": "mean", "group": group, "n": len(g),
                         "value": float(g.mean()) if len(g) else math.nan,
                         "sd": float(g.std(ddof=1)) if len(g) > 1 else math.nan, "test": "regression on group", "p": p})
    table = pd.crosstab(subjects["group"], subjects["sex"]).reindex(index=["patient", "control"], columns=["F", "M"],
                                                                   fill_value=0)
    p_sex = chi2_independence(table.to_numpy())[1] if (table.sum(axis=0) > 0).all() else math.nan
    for group in ("patient", "control"):
        rows.append({"variable": "sex", "level": "female", "group": group, "n": int(table.loc[group].sum()),
                     "value": int(table.loc[group, "F"]), "sd": math.nan, "test": "chi-squared", "p": p_sex})
    for site in ("bulbar", "upper_limb", "lower_limb"):
        n = int(((subjects["group"] == "patient") & (subjects["onset_site"] == site)).sum())
        rows.append({"variable": "onset_site", "level": site, "group": "patient",
                     "n": int((subjects["group"] == "patient").sum()), "value": n, "sd": math.nan, "test": "",
                     "p": math.nan})
    present = obs.dropna(subset=["value"]).merge(subjects[["subject_id", "group"]], on="subject_id")
    for visit in visits:
        for group in ("patient", "control"):
            n = present[(present["visit"] == visit) & (present["group"] == group)]["subject_id"].nunique()
            rows.append({"variable": "subjects_at_visit", "level": visit, "group": group, "n": int(n), "value": int(n),
                         "sd": math.nan, "test": "", "p": math.nan})
    return pd.DataFrame(rows, columns=["variable", "level", "group", "n", "value", "sd", "test", "p"])
