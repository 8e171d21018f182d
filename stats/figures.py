"""Report figures with matplotlib: the paper's Figure 3 and a forest plot of 12-month change."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from storage.catalogue import MUSCLE_BY_KEY

ONSET_COLOURS = {"bulbar": "#1b9e77", "upper_limb": "#d95f02", "lower_limb": "#7570b3"}
FIGURE3_PANELS = (("summary_mean", "none", "Whole-body summary mean"), ("region_of_onset", "none", "Region of onset"),
                  ("muscle_of_onset", "none", "Muscle of onset"), ("tibialis_anterior", "right", "Right tibialis anterior"))


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figure3(obs: pd.DataFrame, subjects: pd.DataFrame) -> bytes:
    """Per-patient relative T2 over time (weeks) for four measures, coloured by onset site;
    all-patients mean dashed black, control mean dashed magenta (PNG bytes)."""
    rel = obs[obs["measure"] == "relT2"].merge(subjects[["subject_id", "group", "onset_site"]], on="subject_id")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
    for ax, (muscle, side, title) in zip(axes.flat, FIGURE3_PANELS):
        part = rel[(rel["muscle"] == muscle) & (rel["side"] == side)].dropna(subset=["value"])
        patients = part[part["group"] == "patient"]
        for (_, site), line in patients.sort_values("days").groupby(["subject_id", "onset_site"]):
            ax.plot(line["days"] / 7, line["value"], "-o", color=ONSET_COLOURS.get(site, "grey"), lw=1, ms=3,
                    alpha=0.75)
        for frame, style, label in ((patients, "k--", "all patients"),
                                    (part[part["group"] == "control"], "m--", "controls")):
            if not frame.empty:
                mean = frame.groupby("visit").agg(weeks=("days", "median"), value=("value", "mean")).sort_values("weeks")
                ax.plot(mean["weeks"] / 7, mean["value"], style, lw=2.2, label=label)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel("relative T2-signal")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("weeks from baseline")
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1, label=k.replace("_", " ") + " onset")
               for k, c in ONSET_COLOURS.items()]
    handles += [plt.Line2D([], [], color="k", ls="--", lw=2, label="all patients"),
                plt.Line2D([], [], color="m", ls="--", lw=2, label="controls")]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def label(muscle: str, side: str) -> str:
    name = MUSCLE_BY_KEY[muscle].name if muscle in MUSCLE_BY_KEY else muscle.replace("_", " ").capitalize()
    return name if side in ("none", "tested", "") else f"{side.capitalize()} {name.lower()}"


def forest(table5: pd.DataFrame, visit: str) -> bytes:
    """Patients' % change in relative T2 from baseline to ``visit`` with 95% CIs, one row per muscle."""
    rows = table5[(table5["group"] == "patient") & (table5["visit"] == visit)].dropna(subset=["pct_change"])
    rows = rows.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.24 * max(len(rows), 4) + 1.2))
    y = np.arange(len(rows))
    significant = rows["sig_bh"] == "true"
    ax.errorbar(rows["pct_change"], y, xerr=[rows["pct_change"] - rows["pct_ci_low"],
                                             rows["pct_ci_high"] - rows["pct_change"]],
                fmt="none", ecolor="grey", lw=1)
    ax.scatter(rows["pct_change"], y, c=np.where(significant, "crimson", "black"), s=18, zorder=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [label(m, s) for m, s in zip(rows["muscle"], rows["side"])], fontsize=8)
    ax.set_xlabel(f"% change in relative T2-signal, baseline to {visit} (95% CI); red: BH-significant")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
