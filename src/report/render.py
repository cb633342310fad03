"""The report written from the claims and their inputs: REPORT.md (`render_report`) and
claims.json (`claims_payload`). Formats only: every number comes from src.report.claims or from
the saved results in `ReportInputs`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from src.core.status import CONVERGED
from src.paper.tables import reason_counts
from src.report.claim import (
    EDGE_SENSITIVE,
    SENSITIVE,
    STRICT,
    WITH_EDGE,
    Claim,
    fmt,
    fmt_ci,
    fmt_values,
)
from src.report.claims import (
    variant_unusable,
)
from src.report.grid_claims import (
    boundary_depths,
    boundary_fit,
    fit_interval,
)
from src.report.inputs import ReportInputs
from src.report.rules import rules_payload


def _mean_std(entry: Mapping[str, Any]) -> str:
    mean, std = entry.get("mean"), entry.get("std")
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def _uncertainty_text(uncertainty: Mapping[str, Any]) -> str:
    """The uncertainty dict in one line (lists of numbers as [a, b, ...])."""
    parts = []
    for key, value in uncertainty.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and isinstance(value[0], Mapping)
        ):
            continue  # nested detail: in claims.json
        if isinstance(value, list):
            value = "[" + ", ".join(fmt(v) for v in value) + "]"
        parts.append(f"{key} {fmt(value) if not isinstance(value, str) else value}")
    return "; ".join(parts) or "see evidence"


def table_s1_markdown(table: Mapping[str, Any]) -> str:
    """Table S1 over converged runs, with the count of converged runs and the statuses of the
    others (never dropped) and the per-seed values, beside the paper's numbers."""
    lines = [
        "| method | converged | others (status, reason) | train loss (ours) | train loss (paper) "
        "| val loss (ours) | val loss (paper) | λ_max (ours) | λ_max (paper) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_seed = []
    for method, row in table.items():
        if not isinstance(row, Mapping):
            continue
        converged = row.get("converged")
        if converged is None:
            converged = sum(s == CONVERGED for s in row.get("statuses", []))
        others = row.get("not_converged")
        if others is None:
            others = [{"seed": "?", "status": s} for s in row.get("statuses", []) if s != CONVERGED]
        others_text = (
            ", ".join(
                f"seed {o.get('seed')}: {o['status']}"
                + (f" ({o['reason']})" if o.get("reason") else "")
                for o in others
            )
            or "none"
        )
        cells = []
        for key in ("final_train_loss", "final_val_loss", "lambda_max"):
            entry = row.get(key) or {}
            cells += [_mean_std(entry), _mean_std(entry.get("paper", {}))]
        lines.append(
            f"| {method} | {converged} of {row.get('seeds', '?')} | {others_text} | "
            + " | ".join(cells)
            + " |"
        )
        for entry in row.get("runs", []):
            per_seed.append(
                f"| {method} | {entry.get('seed')} | {entry.get('status')} | "
                f"{entry.get('reason') or ''} | {fmt(entry.get('final_train_loss'))} | "
                f"{fmt(entry.get('loss_vs_affine'))} | {fmt(entry.get('lambda_max'))} | "
                f"{fmt(entry.get('dead_fraction_max'))} |"
            )
    text = "\n".join(lines)
    if per_seed:
        text += (
            "\n\nPer run (mean ± std above uses the converged runs only):\n\n"
            "| method | seed | status | reason | train loss | loss / affine | λ_max | "
            "max dead fraction |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(per_seed)
        )
    return text


def status_table(stages: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Runs per stage, status and reason: every run accounted for, minima or not."""
    lines = ["| stage | status | reason | runs |", "|---|---|---|---|"]
    for stage, rows in stages.items():
        counts = reason_counts(list(rows))
        if not counts:
            lines.append(f"| {stage} | (no runs) | | 0 |")
        for status, by_reason in counts.items():
            for reason, n in by_reason.items():
                lines.append(f"| {stage} | {status} | {reason} | {n} |")
    return "\n".join(lines)


def boundary_markdown(boundary: Mapping[str, Any]) -> str:
    """lr_max(m) from the bisection with its bracket, state and what limits it (divergence or
    the edge of stability), strictly and with edge-of-stability runs counted as minima; then
    the fit."""
    lines = [
        "| depth | lr_max | bracket [lo, hi] | state | limited by | 2 / lr_max | non-monotone "
        "| with edge: lr_max | with edge: bracket | with edge: limited by | stop reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for depth, entry in boundary_depths(boundary).items():
        lr_max = entry.get("lr_max")
        edge = entry.get("with_edge") or {}
        lines.append(
            f"| {depth} | {fmt(lr_max)} | {fmt_ci(entry.get('bracket'))} | "
            f"{entry.get('state')} | {entry.get('limited_by') or ''} | "
            f"{fmt(2.0 / lr_max) if lr_max else 'n/a'} | "
            f"{fmt_values(entry['non_monotone']) if entry.get('non_monotone') else ''} | "
            f"{fmt(edge.get('lr_max'))} | {fmt_ci(edge.get('bracket'))} | "
            f"{edge.get('limited_by') or ''} | {entry.get('stop_reason') or ''} |"
        )
    lines += [
        "",
        "Limited by: divergence when the run at hi diverged, edge when it ended unstable "
        "(lr x lambda_max beyond the band of the stability limit). With edge: the same runs "
        "with edge-of-stability runs counted as minima.",
    ]
    fit = boundary_fit(boundary)
    if fit:
        ci, source = fit_interval(fit)
        lines += [
            "",
            f"Power law lr_max ~ m^p: p = {fmt(fit.get('exponent'))}, interval {fmt_ci(ci)}"
            + (f" ({source})" if source else "")
            + f", R² {fmt(fit.get('r2'))}.",
        ]
    edge_fit = boundary.get("fit_with_edge") or {}
    if edge_fit:
        ci, _ = fit_interval(edge_fit)
        lines.append(
            f"With edge-of-stability runs counted as minima: p = {fmt(edge_fit.get('exponent'))}"
            f", interval {fmt_ci(ci)}."
        )
    return "\n".join(lines)


def gains_radius_markdown(claim: Claim) -> str:
    """How the claim-6 comparison changes with the radius of the gain search."""
    radius = claim.numbers.get("by_radius") or {}
    if not radius:
        return "No gains at other radii (no converged run of a method, or no gains_by_radius.json)."
    lines = [
        "| gain measured | SGD peaks | Adam peaks | p (SGD lower) |",
        "|---|---|---|---|",
    ]
    for name, v in radius.items():
        lines.append(
            f"| {name} | {fmt_values(v['flat'])} | {fmt_values(v['sharp'])} | {v['p_flat_lower']:.3g} |"
        )
    return "\n".join(lines)


def claim_markdown(claim: Claim, title: str) -> list[str]:
    """One claim's section: its verdict, test, threshold and source, uncertainty, evidence."""
    out = [
        f"### {title} — **{claim.verdict}**",
        "",
        f"- Test: {claim.statistic}",
        f"- Threshold: {claim.threshold}",
        f"- Threshold source: {claim.threshold_source}",
        f"- Uncertainty: {_uncertainty_text(claim.uncertainty)}",
        f"- Evidence: {claim.evidence}",
    ]
    if claim.reason:
        out.append(f"- Undecided because: {claim.reason}")
    for name, reading in claim.readings.items():
        out.append(f"- Reading {READING_LABELS.get(name, name)}: **{reading['verdict']}**")
        if reading.get("reason") and reading["verdict"] != claim.verdict:
            out[-1] += f" ({reading['reason']})"
        if name != STRICT and reading["evidence"] != claim.evidence:
            out.append(f"  - Evidence: {reading['evidence']}")
    return out


READING_LABELS = {
    STRICT: "converged runs only",
    WITH_EDGE: "edge-of-stability runs counted as minima",
}


def _reading_verdict(claim: Claim, name: str) -> str:
    return (claim.readings.get(name) or {}).get("verdict", claim.verdict)


def stability_section(inputs: ReportInputs, claims: Sequence[Claim]) -> list[str]:
    """The verdicts of this run beside those of a rounding-only rerun (issue 23 item 7)."""
    out = ["## Verdict stability", ""]
    why_not = variant_unusable(inputs)
    if why_not is not None:
        return [*out, f"Not compared: {why_not}."]
    variant = inputs.variant
    changes = ", ".join(f"`{o}`" for o in variant.get("overrides", [])) or "none"
    out += [
        f"The whole pipeline was run a second time with a change that alters float rounding "
        f"only ({changes}; {_minutes(variant.get('seconds'))}), by `python -m "
        "pipelines.verdict_stability`. A claim the two runs decide differently is "
        f"`{SENSITIVE}`.",
        "",
        "| claim | this run | rounding variant | verdict |",
        "|---|---|---|---|",
    ]
    for claim in claims:
        this, other = claim.stability.get("this_run"), claim.stability.get("variant")
        out.append(f"| `{claim.name}` | {this} | {other or 'n/a'} | **{claim.verdict}** |")
    return out


def _minutes(seconds: float | None) -> str:
    return "time not recorded" if seconds is None else f"{seconds / 60:.0f} minutes"


def rules_section() -> list[str]:
    """The rules behind the verdicts and the earlier ones (issue 23 item 6)."""
    rules = rules_payload()
    return [
        "## Rules and their history",
        "",
        f"The current rules were fixed in commit `{rules['frozen_at']}`, before the results "
        "above were computed:",
        "",
        *[f"- {rule}" for rule in rules["current"]],
        "",
        "Earlier versions of this project applied other rules to results of this profile "
        "(so some verdicts were published before these rules existed):",
        "",
        *[f"- {rule}" for rule in rules["earlier"]],
    ]


def spectra_markdown(spectra: Mapping[str, Any]) -> str:
    """Per method, over its converged runs: lambda_1, the gap ratio lambda_1 / lambda_2, the
    Hessian trace (Hutchinson, mean of the per-run estimates; each run's relative standard
    error below its stated tolerance or flagged) and the mean eigenvalue tr(H)/N, with the cost
    of each measure in HVPs. Units: the training loss is per-pixel MSE."""
    lines = [
        "| method | converged | λ_1 | λ_1/λ_2 | tr(H) (Hutchinson) | max rel. std. error | "
        "tr(H)/N | HVPs: λ_max, trace, density |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, rows in (spectra.get("runs") or {}).items():
        used = [r for r in rows if r.get("status") == CONVERGED]

        def mean(key: str, rows=used) -> str:
            values = [r[key] for r in rows if r.get(key) is not None]
            if not values:
                return "n/a"
            text = f"{np.mean(values):.4g}"
            return text + (f" ± {np.std(values, ddof=1):.2g}" if len(values) > 1 else "")

        rel = [
            r["trace_stderr"] / abs(r["trace"])
            for r in used
            if r.get("trace") and r.get("trace_stderr") is not None
        ]
        per_n = [
            r["trace"] / r["parameters"] for r in used if r.get("trace") and r.get("parameters")
        ]
        unconverged = sum(r.get("trace_converged") is False for r in used)
        density_hvps = mean("density_hvps")
        if density_hvps == "n/a":  # measured once per method (by the stage), not per run
            density_hvps = fmt((spectra.get("densities", {}).get(method) or {}).get("hvps"))
        lines.append(
            f"| {method} | {len(used)} of {len(rows)} | {mean('lambda_1')} | {mean('gap_ratio')} "
            f"| {mean('trace')} | {fmt(max(rel)) if rel else 'n/a'}"
            + (f" ({unconverged} above tol)" if unconverged else "")
            + f" | {fmt(float(np.mean(per_n))) if per_n else 'n/a'} | "
            f"{mean('lambda_hvps')}, {mean('trace_hvps')}, {density_hvps} |"
        )
    return "\n".join(lines)


def beyond_section(beyond: Sequence[Claim], spectra: Mapping[str, Any] | None) -> list[str]:
    """Beyond the paper: the verdicts on the further methods (SAM), and the Hessian trace,
    top-2 gap and cost of every method's minima."""
    out = ["## Beyond the paper: SAM's minima, Hessian trace and spectral density", ""]
    if beyond:
        counts = Counter(c.verdict for c in beyond)
        out += [
            f"Same standards as the paper's claims ({counts['holds']} hold, "
            f"{counts['does not hold']} do not hold, "
            f"{counts['undecided'] + counts[EDGE_SENSITIVE] + counts[SENSITIVE]} undecided), "
            "each read both ways:",
            "",
            "| question | verdict | converged only | with edge runs | why undecided |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {c.statement} | **{c.verdict}** | {_reading_verdict(c, STRICT)} | "
            f"{_reading_verdict(c, WITH_EDGE)} | {c.reason or ''} |"
            for c in beyond
        ]
        for claim in beyond:
            out += ["", *claim_markdown(claim, claim.statement)]
    else:
        out.append("No method beyond the paper's two in this profile.")
    if spectra:
        out += [
            "",
            "### Hessian trace, top-2 gap and cost per method (converged runs, mean ± std)",
            "",
            spectra_markdown(spectra),
            "",
            "λ_1/λ_2 near 1 is what makes the power method slow (its error shrinks like "
            "(λ_2/λ_1)^(2k)); the densities of one minimum per method are in the figure "
            "`fig_hessian_density`.",
        ]
    return out


def decided_section(profile: str, claims: Sequence[Claim]) -> list[str]:
    """Which claims this profile's data decide, derived from the verdicts and reasons (not
    written per profile): an undecided claim needs more or longer runs (the paper profile)."""
    title = "What the CPU proxy decides" if profile == "cpu" else f"What profile {profile} decides"
    decided = [c for c in claims if c.holds is not None]
    open_ = [c for c in claims if c.holds is None]
    out = [f"## {title}", ""]
    out.append(
        f"Decided here ({len(decided)} of {len(claims)}): "
        + (", ".join(f"`{c.name}` ({c.verdict})" for c in decided) or "none")
        + "."
    )
    out.append("")
    if open_:
        out.append(
            f"Not decided here ({len(open_)}): these need the paper profile (or more converged "
            "runs, step sizes or depths than this profile affords):"
        )
        out.append("")
        out += [f"- `{c.name}`: {c.reason}" for c in open_]
    return out


def stage_rows(inputs: ReportInputs) -> dict[str, list[Mapping[str, Any]]]:
    """(status, reason) of every run per stage, for the status table."""
    stages: dict[str, list[Mapping[str, Any]]] = {
        "grid_identity": inputs.identity,
        "grid_he": inputs.he,
        "flat_vs_sharp": [
            run
            for row in inputs.table_s1.values()
            if isinstance(row, Mapping)
            for run in row.get("runs", [])
        ],
    }
    if inputs.boundary:
        stages["boundary (probes)"] = [
            probe
            for entry in boundary_depths(inputs.boundary).values()
            for probe in entry.get("probes", [])
        ]
    return stages


def render_report(
    inputs: ReportInputs, claims: Sequence[Claim], beyond: Sequence[Claim] = ()
) -> str:
    """REPORT.md: the verdicts with their tests, the runs behind them and the figures."""
    counts = Counter(c.verdict for c in claims)
    out = [
        "# Reproduction report: Unique Properties of Flat Minima in Deep Networks",
        "",
        f"Generated by `dvc repro` from the saved results of profile **{inputs.profile}**.",
        "",
        inputs.notes.strip(),
        "",
        f"## Claims of Sec. 6 checked on our data ({counts['holds']} hold, "
        f"{counts['does not hold']} do not hold, "
        f"{counts['undecided'] + counts[EDGE_SENSITIVE] + counts[SENSITIVE]} undecided, of "
        f"which {counts[EDGE_SENSITIVE]} edge-sensitive and {counts[SENSITIVE]} sensitive to "
        "rounding)",
        "",
        "Only runs that reached a minimum enter a statistic. Each claim is judged twice: with "
        "the runs of status `converged` only, and with the runs at the edge of stability "
        f"(`edge_of_stability`: {inputs.edge_runs} runs here) counted as minima too; where the "
        "two readings differ, the verdict is `undecided (edge-sensitive)`. The rules and their "
        "history are at the end of this section.",
        "",
        "| claim | verdict | converged only | with edge runs | why undecided |",
        "|---|---|---|---|---|",
    ]
    for claim in claims:
        out.append(
            f"| {claim.statement} | **{claim.verdict}** | {_reading_verdict(claim, STRICT)} | "
            f"{_reading_verdict(claim, WITH_EDGE)} | {claim.reason or ''} |"
        )
    for i, claim in enumerate(claims, 1):
        out += ["", *claim_markdown(claim, f"Claim {i}: {claim.statement}")]
    out += ["", *decided_section(inputs.profile, claims), ""]
    out += [*stability_section(inputs, [*claims, *beyond]), ""]
    out += [*rules_section(), ""]
    out += ["## Run statuses (every run, per stage)", "", status_table(stage_rows(inputs)), ""]
    out += [
        "## Table S1: flat (SGD) vs sharp (Adam) minima, 6 layers (and beyond the paper: "
        "SAM, when the profile trains it)",
        "",
        table_s1_markdown(inputs.table_s1),
        "",
    ]
    gains_claim = next((c for c in claims if c.name == "flat_gains_balanced"), None)
    if gains_claim is not None:
        out += [
            "## Gains vs the radius of the gain search (claim 6)",
            "",
            gains_radius_markdown(gains_claim),
            "",
        ]
    if beyond or inputs.spectra:
        out += [*beyond_section(beyond, inputs.spectra), ""]
    out += ["## Stability boundary lr_max(m) by bisection", ""]
    out += [boundary_markdown(inputs.boundary) if inputs.boundary else "No bisection output.", ""]
    out += ["## Grids", ""]
    for name, summary in inputs.grid_summaries.items():
        runs = ", ".join(
            f"{k.removeprefix('runs_')} {v}" for k, v in summary.items() if k.startswith("runs_")
        )
        out.append(f"- `{name}`: {summary.get('runs', 0)} runs ({runs}).")
    linear = inputs.linear_check
    if linear:
        out += [
            "",
            "## Linear networks end to end (Lemma 1 with the training stack)",
            "",
            f"{linear.get('runs_converged', 0)} of {linear.get('runs', 0)} runs "
            "converged; largest relative gap between the measured sharpness and Thm 1's value "
            f"for the learned T: {fmt(linear.get('max_relative_error'))}; largest "
            f"η·λ_max: {fmt(linear.get('max_lr_times_lambda_max'))} (stability limit 2).",
        ]
    if inputs.theory:
        out += [
            "",
            "## Theory checks (linear networks, exact)",
            "",
            f"All claims passed: {bool(inputs.theory.get('all_passed'))}. "
            "Details in `results/theory/verify.json`.",
        ]
    out += ["", "## Figures", ""]
    for caption, path in inputs.figures:
        out += [f"### {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(out).rstrip() + "\n"


def claims_payload(profile: str, claims: Sequence[Claim], beyond: Sequence[Claim]) -> dict:
    """claims.json: the verdict counts and every claim with its test and numbers."""
    verdicts = Counter(c.verdict for c in claims)
    return {
        "profile": profile,
        "claims_holding": verdicts["holds"],
        "claims_not_holding": verdicts["does not hold"],
        "claims_undecided": verdicts["undecided"] + verdicts[EDGE_SENSITIVE] + verdicts[SENSITIVE],
        "claims_edge_sensitive": verdicts[EDGE_SENSITIVE],
        "claims_sensitive_to_rounding": verdicts[SENSITIVE],
        "readings": dict(READING_LABELS),
        "rules": rules_payload(),
        "claims": {c.name: c.to_dict() for c in claims},
        "beyond_the_paper": {c.name: c.to_dict() for c in beyond},
    }
