"""Kaplan-Meier plots by IChIS stratum (the paper's Figure 4) as PNG and SVG, drawn with matplotlib (Agg)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts

matplotlib.use("Agg")  # files only, no display; must come before pyplot is imported
import matplotlib.pyplot as plt

from cohort.analysis import ENDPOINTS, VARIABLE_BY_NAME, SurvivalAnalysis

COLOURS = {"0": "#1b7837", "1": "#e08214", "2": "#b2182b"}


def km_figure(analysis: SurvivalAnalysis, synthetic: bool) -> Any:
    """A matplotlib Figure: one Kaplan-Meier curve per IChIS stratum with numbers at risk."""

    figure, axis = plt.subplots(figsize=(7.5, 5.6), dpi=110)
    fitters = []
    data = analysis.data_
    for level in VARIABLE_BY_NAME["ichis"].levels:
        rows = data[data["ichis"] == level]
        if len(rows) == 0:
            continue
        fitter = KaplanMeierFitter(label=f"IChIS {level}").fit(rows["duration"], rows["event"])
        fitter.plot_survival_function(
            ax=axis, ci_show=True, color=COLOURS[level], show_censors=len(rows) <= 500
        )
        fitters.append(fitter)
    axis.set_xlabel("Days since the first checkpoint-inhibitor dose")
    axis.set_ylabel(f"{ENDPOINTS[analysis.endpoint][2]} probability")
    axis.set_ylim(0, 1.02)
    axis.axhline(0.5, color="#999999", linewidth=0.6, linestyle=":")
    test = analysis.logrank_["ichis"]
    title = f"{ENDPOINTS[analysis.endpoint][2]} by IChIS"
    if test is not None:
        title += f" (log-rank p {'<0.001' if test.p < 0.001 else f'= {test.p:.3f}'})"
    elif len(fitters) > 1:
        title += " (log-rank not estimable)"
    axis.set_title(title)
    if synthetic:
        axis.text(
            0.5,
            0.55,
            "SYNTHETIC DATA",
            transform=axis.transAxes,
            fontsize=30,
            color="#cc0000",
            alpha=0.18,
            ha="center",
            va="center",
            rotation=20,
        )
    if fitters:
        add_at_risk_counts(*fitters, ax=axis, rows_to_show=["At risk"])
    figure.tight_layout()
    return figure


def save_km(analysis: SurvivalAnalysis, folder: Path, synthetic: bool) -> tuple[Path, Path, bytes]:
    """Write ``km_<endpoint>.png`` and ``.svg``; return both paths and the PNG bytes for the report."""
    figure = km_figure(analysis, synthetic)
    png = folder / f"km_{analysis.endpoint}.png"
    svg = folder / f"km_{analysis.endpoint}.svg"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png.write_bytes(buffer.getvalue())
    # Text stays text in the SVG (searchable, smaller), so the synthetic label is readable in the file.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(svg, format="svg")
    plt.close(figure)
    return png, svg, buffer.getvalue()
