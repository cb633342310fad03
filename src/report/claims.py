"""Each qualitative claim of Sec. 6, and beyond the paper each further method's, judged from
our saved results (`check_claims`, `check_beyond_claims`).

Every verdict states its test (issue 11): the statistic, the threshold and where it comes from
(the paper's figure, table or theorem, or "fixed in advance" with the reason), the uncertainty
(per-seed values, rank tests, t intervals), and one of three verdicts:
  holds          the data support the claim at the stated threshold;
  does not hold  the data contradict it at the stated threshold;
  undecided      the data cannot decide: too few minima, a boundary not bracketed, intervals
                 that overlap, too few depths. `reason` says which.
Only runs with status `converged` (a minimum: stationary, below the affine denoiser, linearly
stable) enter any statistic; a claim whose runs are not minima is undecided, with the statuses.

The thresholds below were fixed from the paper before looking at any result of this project;
changing one after seeing the outcome defeats the report's purpose. Issue 23 (item 4) added
rules, fixed before their outcome was looked at, so that each claim tests what the paper claims:
  claim 4 (Fig. 5a, Lemma 1) a second test, lr_stable(He) below lr_stable(identity) per depth
          (a sharper start meets the stability limit of App. I eq. S4, lambda_max <= 2 / lr,
          at a smaller step; sign test over depths), combined with the matched-cell test by
          `combine_verdicts`;
  claim 5 (Table S1) the two methods' minima must first be comparable (`comparability`:
          training losses within 20%, SGD's lr x lambda_max <= 1.8, i.e. 0.9 of eq. S4's
          limit), then direction and magnitude are separate lines;
  claim 7 (Fig. 7, Lemma 2) only pairs whose lambda_max ratio sharp / flat is
          >= MIN_SHARPNESS_RATIO count, and the interval is over flat runs, not pairs;
  ratios of lambda_max: a Welch t-interval of the ratio of geometric means
          (src.paper.statistics.geometric_mean_ratio_ci), honest at 3-4 runs per method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from src.report.claim import (
    STRICT,
    UNDECIDED,
    WITH_EDGE,
    Claim,
    plain,
)
from src.report.grid_claims import (
    claim_flattest_linear_in_m,
    claim_he_sharper,
    claim_larger_steps_flatter,
    claim_lr_max_one_over_m,
)
from src.report.inputs import ReportInputs
from src.report.minima_claims import (
    claim_adam_sharper,
    claim_flat_gains_balanced,
    claim_interpolation_misleads,
    claim_method_flat,
    claim_method_interpolation,
)
from src.report.rules import RULES_FROZEN_AT


def judged_both_ways(strict: Claim, with_edge: Claim) -> Claim:
    """One claim from its two readings (issue 23 item 2): edge-of-stability runs not counted
    as minima (`strict`) and counted (`with_edge`). Where they agree the verdict stands (the
    strict reading's evidence and uncertainty are shown); where they differ the claim is
    `undecided (edge-sensitive)`, since which runs are minima then decides it. Both readings
    are kept in `readings`."""
    claim = strict
    claim.readings = {
        STRICT: _reading(strict),
        WITH_EDGE: _reading(with_edge),
    }
    if strict.holds is not with_edge.holds:
        claim.reason = (
            f"edge-sensitive: {strict.verdict} with converged runs only, {with_edge.verdict} "
            "with edge-of-stability runs counted as minima"
        )
        claim.holds, claim.edge_sensitive = UNDECIDED, True
    return claim


def _reading(claim: Claim) -> dict[str, Any]:
    return plain(
        {
            "verdict": claim.verdict,
            "holds": claim.holds,
            "reason": claim.reason,
            "evidence": claim.evidence,
            "uncertainty": claim.uncertainty,
            "numbers": claim.numbers,
        }
    )


def variant_unusable(inputs: ReportInputs) -> str | None:
    """Why the rounding variant's verdicts cannot be compared with this run's (None: they can):
    none saved, another profile, or other rules."""
    variant = inputs.variant
    if not variant:
        return "no rounding variant has been run (python -m pipelines.verdict_stability)"
    if variant.get("profile") != inputs.profile:
        return f"the saved variant ran profile {variant.get('profile')!r}, not {inputs.profile!r}"
    frozen = (variant.get("rules") or {}).get("frozen_at")
    if frozen != RULES_FROZEN_AT:
        return (
            f"the saved variant ran under other rules (frozen at {frozen}, now {RULES_FROZEN_AT})"
        )
    return None


def judged_across_runs(claims: Sequence[Claim], variant: Mapping[str, Any]) -> list[Claim]:
    """Each claim against the verdict a rounding-only rerun of the pipeline gave it (issue 23
    item 7): where they differ, rounding alone decides it, and it is `undecided (sensitive)`."""
    for claim in claims:
        other = (variant.get(claim.name) or {}).get("verdict")
        claim.stability = {"this_run": claim.verdict, "variant": other}
        if other is not None and other != claim.verdict:
            claim.reason = f"sensitive to rounding: {claim.verdict} here, {other} in the variant"
            claim.holds, claim.sensitive = UNDECIDED, True
    return claims


def check_claims(inputs: ReportInputs) -> list[Claim]:
    """Every claim of Sec. 6, in the paper's order, judged by `judged`."""
    return judged(inputs, paper_claims, "claims")


def check_beyond_claims(inputs: ReportInputs) -> list[Claim]:
    """The further methods' claims (`beyond_claims`), judged by `judged` like the paper's."""
    return judged(inputs, beyond_claims, "beyond_the_paper")


def judged(
    inputs: ReportInputs, claims_of: Callable[[ReportInputs], list[Claim]], variant_key: str
) -> list[Claim]:
    """The claims `claims_of` gives, each judged with and without the edge-of-stability runs
    counted as minima (`judged_both_ways`), then against the rounding variant's verdict (its
    `variant_key` section) when one is saved for this profile and these rules."""
    claims = [
        judged_both_ways(strict, with_edge)
        for strict, with_edge in zip(claims_of(inputs), claims_of(inputs.counting_edge_as_minima()))
    ]
    if variant_unusable(inputs) is None:
        judged_across_runs(claims, inputs.variant.get(variant_key) or {})
    return claims


def paper_claims(inputs: ReportInputs) -> list[Claim]:
    """Every claim of Sec. 6 in one reading of the inputs, in the paper's order. Table S1's
    methods are read in params.yaml order (the flat one first)."""
    flat, sharp = inputs.methods[:2]
    table = inputs.table_s1
    return [
        claim_larger_steps_flatter(inputs.identity, inputs.boundary_probes),
        claim_lr_max_one_over_m(inputs.boundary),
        claim_flattest_linear_in_m(inputs.identity, inputs.boundary, inputs.boundary_probes),
        claim_he_sharper(inputs.identity, inputs.he),
        claim_adam_sharper(table, flat, sharp),
        claim_flat_gains_balanced(inputs.gains, flat, sharp, table, inputs.gains_by_radius),
        claim_interpolation_misleads(inputs.pairs, table, inputs.skipped_pairs, flat, sharp),
    ]


def beyond_claims(inputs: ReportInputs) -> list[Claim]:
    """For each method beyond the paper's two (Table S1's third and later rows, e.g. SAM): is
    its minimum flat in the paper's sense, and does the interpolation picture mislead for it?"""
    flat, sharp, *others = inputs.methods
    claims = []
    for method in others:
        pairs = [p for p in inputs.other_pairs if p.get("method") == method]
        skipped = inputs.others_skipped(method)
        claims.append(claim_method_flat(inputs.table_s1, inputs.gains, method, flat, sharp))
        claims.append(claim_method_interpolation(pairs, inputs.table_s1, skipped, method, sharp))
    return claims
