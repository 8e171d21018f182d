"""The cohort report: one self-contained HTML file (Jinja2, figures embedded) and its PDF (WeasyPrint).

Tables are laid out like the paper's: "estimate (95% CI)", p, bold when p < 0.05 and an
asterisk when significant after Benjamini–Hochberg; Table 1 rows in the paper's order
(significant differences first, largest first).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stats.figures import figure3, forest, label
from stats.run import RunResult

PDF_NAME, HTML_NAME = "report.pdf", "report.html"
TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True, kw_only=True)
class ReportInputs:
    """What the report shows besides the statistics: run metadata and processing status."""

    run: dict[str, Any]
    cutoff: str
    status: dict[str, int]
    incomplete: list[dict[str, str]]
    # per processed visit: subject, visit, thumbnail (PNG bytes), links (name → path relative to the report),
    # flags (QC flag counts as text)
    qc: list[dict[str, Any]] = field(default_factory=list)


def _num(v: float, digits: int = 1) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _est(v: float, lo: float, hi: float, digits: int = 1) -> str:
    if v is None or math.isnan(v):
        return ""
    ci = f" ({_num(lo, digits)}, {_num(hi, digits)})" if not math.isnan(lo) else " (CI unbounded)"
    return f"{_num(v, digits)}{ci}"


def _cell(text: str, p: float | None = None, sig: str | None = None, *, num: bool = True) -> dict[str, str]:
    bold = p is not None and not math.isnan(p) and p < 0.05
    return {"text": text + ("*" if sig == "true" else ""), "cls": " ".join(c for c in ("num" if num else "", "sig" if bold else "") if c)}


def _paper_order(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Significant rows first, each block by decreasing estimate (as the paper's Tables 1 and 2)."""
    return frame.assign(_s=frame["p"] >= 0.05, _v=-frame[value].fillna(-1e9)).sort_values(["_s", "_v"])


def _between(frame: pd.DataFrame, title: str, *, with_prop: bool) -> dict[str, Any]:
    header = ["Muscle", "Measure", "% difference patients vs controls (95% CI)", "p"]
    header += ["Proportion weak, MRC < 5 (95% CI)"] if with_prop else []
    rows = []
    for _, r in _paper_order(frame, "pct_diff").iterrows():
        row = [_cell(label(r["muscle"], r["side"]), num=False), _cell(r["measure"], num=False),
               _cell(_est(r["pct_diff"], r["ci_low"], r["ci_high"]), r["p"], r["sig_bh"]),
               _cell(_p(r["p"]), r["p"], r["sig_bh"])]
        if with_prop:
            prop = "not tested" if pd.isna(r.get("prop_weak")) else _est(r["prop_weak"], r["prop_ci_low"],
                                                                         r["prop_ci_high"], 2)
            row.append(_cell(prop))
        rows.append(row)
    return {"title": title, "header": header, "rows": rows}


def _longitudinal(frame: pd.DataFrame, title: str, *, percent: bool) -> dict[str, Any]:
    visits = list(dict.fromkeys(frame["visit"]))
    header = ["Group", "Measure", "Muscle"]
    for v in visits:
        header += [f"{'% change' if percent else 'Difference'} baseline → {v} (95% CI)", "p"]
    header += ["SRM", "Var ratio"]
    rows = []
    for (group, measure, muscle, side), part in frame.groupby(["group", "measure", "muscle", "side"], sort=False):
        row = [_cell(group, num=False), _cell(measure, num=False), _cell(label(muscle, side) if muscle else "", num=False)]
        for v in visits:
            hit = part[part["visit"] == v]
            if hit.empty:
                row += [_cell(""), _cell("")]
                continue
            r = hit.iloc[0]
            est = (_est(r["pct_change"], r["pct_ci_low"], r["pct_ci_high"]) if percent
                   else _est(r["coef"], r["ci_low"], r["ci_high"], 2))
            row += [_cell(est, r["p"], r["sig_bh"]), _cell(_p(r["p"]), r["p"], r["sig_bh"])]
        first = part.iloc[0]
        row += [_cell(_num(first["srm"], 2)), _cell(_num(first["var_ratio"], 2))]
        rows.append(row)
    return {"title": title, "header": header, "rows": rows}


def _simple(frame: pd.DataFrame, title: str, columns: list[tuple[str, str]], *, estimate: bool = True) -> dict[str, Any]:
    header = [h for h, _ in columns] + (["Coefficient (95% CI)", "p"] if estimate else ["p"])
    rows = []
    for _, r in frame.iterrows():
        row = [_cell(str(r[c]) if c not in ("muscle",) else label(r["muscle"], r.get("side", "none")), num=False)
               for _, c in columns]
        if estimate:
            row.append(_cell(_est(r["coef"], r["ci_low"], r["ci_high"], 2), r["p"], r["sig_bh"]))
        row.append(_cell(_p(r["p"]), r["p"], r["sig_bh"]))
        rows.append(row)
    return {"title": title, "header": header, "rows": rows}


def render_html(result: RunResult, obs: pd.DataFrame, subjects: pd.DataFrame, inputs: ReportInputs) -> str:
    f = result.frames
    later = [v for v in dict.fromkeys(f["table5"]["visit"])] if not f["table5"].empty else []
    forest_visit = later[-1] if later else ""
    visit_counts = []
    present = obs.dropna(subset=["value"]).merge(subjects[["subject_id", "group"]], on="subject_id")
    for v in [v for v in inputs.run.get("visits", []) if v in set(present["visit"])]:
        at = present[present["visit"] == v]
        visit_counts.append({"label": v, "patients": at[at["group"] == "patient"]["subject_id"].nunique(),
                             "controls": at[at["group"] == "control"]["subject_id"].nunique()})
    tables = [
        _between(f["table1"], "Table 1 — relative T2-signal, patients vs controls at baseline", with_prop=True),
        _between(f["table1_adc"], "Table 1 (ADC) — apparent diffusion coefficient at baseline", with_prop=False),
        *([_between(f["table1_ff"], "Table 1 (fat fraction) — Dixon fat fraction at baseline (%)", with_prop=False)]
          if not f["table1_ff"].empty else []),
        _between(f["table2"], "Table 2 — electrophysiology at baseline (side tested)", with_prop=False),
        _simple(f["table3"], "Table 3 — associations with relative T2 (patients, baseline)",
                [("Measure", "measure"), ("Muscle", "muscle"), ("n", "n")]),
        _longitudinal(f["table4"], "Table 4 — clinical and electrophysiological change", percent=False),
        _longitudinal(f["table5"], "Table 5 — change in relative T2-signal", percent=True),
        _longitudinal(f["table5_adc"], "Table 5 (ADC) — change in ADC", percent=True),
        *([_longitudinal(f["table5_ff"], "Table 5 (fat fraction) — change in Dixon fat fraction (percentage points)",
                         percent=False)] if not f["table5_ff"].empty else []),
        _simple(f["predictors"], "Baseline relative T2 as predictor of MRC change",
                [("Subset", "subset"), ("Visit", "visit"), ("Muscle", "muscle"), ("n", "n")]),
        _simple(f["mrc_wilcoxon"].assign(side=f["mrc_wilcoxon"]["side"]),
                "MRC scores: median at baseline and follow-up (Wilcoxon signed-rank)",
                [("Muscle", "muscle"), ("Visit", "visit"), ("n", "n"), ("Median baseline", "median_baseline"),
                 ("Median follow-up", "median_visit")], estimate=False),
    ]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2").render(
        title="myonode cohort report", run=inputs.run, cutoff=inputs.cutoff, status=inputs.status,
        incomplete=inputs.incomplete, tables=tables, warnings=result.warnings,
        qc=[{**q, "thumbnail": base64.b64encode(q["thumbnail"]).decode()} for q in inputs.qc],
        counts={"patients": int((subjects["group"] == "patient").sum()),
                "controls": int((subjects["group"] == "control").sum()), "visits": visit_counts},
        figure3=base64.b64encode(figure3(obs, subjects)).decode(),
        forest=base64.b64encode(forest(f["table5"], forest_visit)).decode(), forest_visit=forest_visit,
    )


def write_report(result: RunResult, obs: pd.DataFrame, subjects: pd.DataFrame, inputs: ReportInputs,
                 out: Path) -> tuple[Path, Path]:
    """report.html and report.pdf in ``out``."""
    from weasyprint import HTML

    html = render_html(result, obs, subjects, inputs)
    html_path, pdf_path = out / HTML_NAME, out / PDF_NAME
    html_path.write_text(html, encoding="utf-8")
    HTML(string=html, base_url=str(out)).write_pdf(pdf_path)
    return html_path, pdf_path
