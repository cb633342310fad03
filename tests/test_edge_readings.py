"""Issue 23 item 2: every claim judged with edge-of-stability runs counted as minima and
without; a claim the two readings decide differently is `undecided (edge-sensitive)`."""

from __future__ import annotations

from src.paper.tables import table_s1_from_entries
from src.report.claim import (
    EDGE_SENSITIVE,
    STRICT,
    WITH_EDGE,
    Claim,
)
from src.report.claims import (
    check_claims,
    judged_both_ways,
)
from src.report.inputs import ReportInputs
from src.report.render import claims_payload, render_report


def claim(holds, reason=None):
    return Claim("c", "a claim", holds, f"evidence {holds}", reason=reason)


def test_two_readings_that_agree_keep_their_verdict():
    both = judged_both_ways(claim(True), claim(True))
    assert both.holds is True and both.verdict == "holds" and not both.edge_sensitive
    assert both.readings[STRICT]["verdict"] == both.readings[WITH_EDGE]["verdict"] == "holds"
    undecided = judged_both_ways(claim(None, "too few"), claim(None, "other"))
    assert undecided.verdict == "undecided" and undecided.reason == "too few"


def test_two_readings_that_differ_are_edge_sensitive():
    for strict, with_edge in ((True, None), (None, False), (True, False)):
        both = judged_both_ways(claim(strict), claim(with_edge))
        assert both.holds is None and both.edge_sensitive and both.verdict == EDGE_SENSITIVE
        verdicts = {True: "holds", False: "does not hold", None: "undecided"}
        assert both.reason == (
            f"edge-sensitive: {verdicts[strict]} with converged runs only, "
            f"{verdicts[with_edge]} with edge-of-stability runs counted as minima"
        )
        assert both.readings[WITH_EDGE]["holds"] is with_edge
        assert both.to_dict()["verdict"] == "undecided (edge-sensitive)"


def entry(seed, lam, status="converged", lr=0.05, loss=0.03):
    return {
        "seed": seed,
        "status": status,
        "reason": "lr_lambda_within_band" if status == "edge_of_stability" else "stationary",
        "final_train_loss": loss,
        "final_val_loss": loss,
        "lambda_max": lam,
        "lr": lr,
        "lr_times_lambda_max": lr * lam,
    }


def inputs(sgd_statuses):
    """Table S1 with 4 SGD runs (statuses given) and 4 Adam runs about 7x sharper."""
    sgd = [entry(i, 1.7 + 0.02 * i, s) for i, s in enumerate(sgd_statuses)]
    adam = [entry(i, v, lr=3e-4) for i, v in enumerate([10.0, 12.0, 14.0, 16.0])]
    return ReportInputs(
        identity=[{"depth": 2, "lr": 1.0, "seed": 0, "status": "edge_of_stability"}],
        table_s1=table_s1_from_entries({"sgd": sgd, "adam": adam}),
    )


def test_the_edge_reading_relabels_every_run_a_claim_reads():
    data = inputs(["converged", "converged", "edge_of_stability", "edge_of_stability"])
    assert data.edge_runs == 3  # 2 in Table S1, 1 in the grid
    edge = data.counting_edge_as_minima()
    assert edge.identity[0]["status"] == "converged"
    assert edge.table_s1["sgd"]["converged"] == 4 and data.table_s1["sgd"]["converged"] == 2
    assert edge.table_s1["sgd"]["converged_seeds"] == [0, 1, 2, 3]
    assert data.identity[0]["status"] == "edge_of_stability"  # the original is untouched


def test_a_claim_decided_only_with_the_edge_runs_is_edge_sensitive():
    """Claim 5 with 2 converged and 2 edge SGD runs: too few minima without the edge runs,
    Adam sharper by the paper's factor with them."""
    data = inputs(["converged", "converged", "edge_of_stability", "edge_of_stability"])
    claims = {c.name: c for c in check_claims(data)}
    adam = claims["adam_sharper"]
    assert adam.readings[STRICT]["verdict"] == "undecided"
    assert "fewer than 3 converged runs per method" in adam.readings[STRICT]["reason"]
    assert adam.readings[WITH_EDGE]["verdict"] == "holds"
    assert adam.verdict == EDGE_SENSITIVE
    # with all four converged, both readings agree
    agreed = {c.name: c for c in check_claims(inputs(["converged"] * 4))}["adam_sharper"]
    assert agreed.verdict == "holds" and not agreed.edge_sensitive
    payload = claims_payload("tiny", list(claims.values()), [])
    assert payload["claims_edge_sensitive"] == 1
    assert payload["claims"]["adam_sharper"]["readings"][WITH_EDGE]["verdict"] == "holds"
    assert payload["rules"]["current"] and payload["rules"]["earlier"]
    report = render_report(data, list(claims.values()))
    assert "| **undecided (edge-sensitive)** | undecided | holds |" in report
    assert "## Rules and their history" in report


# --- issue 23 item 7: a rounding-only rerun's verdicts beside this run's -----------------------


def test_a_claim_the_rounding_variant_decides_otherwise_is_sensitive():
    from src.report.rules import RULES_FROZEN_AT

    data = inputs(["converged"] * 4)
    data.profile = "cpu"
    variant = {"profile": "cpu", "rules": {"frozen_at": RULES_FROZEN_AT}, "overrides": ["x=1"]}
    data.variant = {**variant, "claims": {"adam_sharper": {"verdict": "holds"}}}
    same = {c.name: c for c in check_claims(data)}["adam_sharper"]
    assert same.verdict == "holds" and same.stability == {"this_run": "holds", "variant": "holds"}
    data.variant = {**variant, "claims": {"adam_sharper": {"verdict": "undecided"}}}
    claims = check_claims(data)
    moved = {c.name: c for c in claims}["adam_sharper"]
    assert moved.verdict == "undecided (sensitive)" and moved.holds is None and moved.sensitive
    assert moved.reason == "sensitive to rounding: holds here, undecided in the variant"
    assert claims_payload("cpu", claims, [])["claims_sensitive_to_rounding"] == 1
    report = render_report(data, claims)
    assert "| `adam_sharper` | holds | undecided | **undecided (sensitive)** |" in report


def test_a_variant_of_another_profile_or_other_rules_is_not_compared():
    data = inputs(["converged"] * 4)
    data.profile = "cpu"
    cases = {
        None: "no rounding variant has been run",
        "tiny": "the saved variant ran profile 'tiny', not 'cpu'",
        "old rules": "the saved variant ran under other rules (frozen at abc123",
    }
    for case, why in cases.items():
        data.variant = (
            None
            if case is None
            else {
                "profile": "tiny" if case == "tiny" else "cpu",
                "rules": {"frozen_at": "abc123"},
                "claims": {"adam_sharper": {"verdict": "undecided"}},
            }
        )
        if case == "tiny":
            from src.report.rules import RULES_FROZEN_AT

            data.variant["rules"]["frozen_at"] = RULES_FROZEN_AT
        claims = check_claims(data)
        assert {c.name: c for c in claims}["adam_sharper"].verdict == "holds", case
        assert f"Not compared: {why}" in render_report(data, claims), case


def test_the_variant_overrides_existing_params_only():
    import pytest

    from src.experiments.verdict_stability import VARIANT_FILE as WRITTEN
    from src.experiments.verdict_stability import VariantError, set_param
    from src.report.inputs import VARIANT_FILE

    assert VARIANT_FILE == WRITTEN  # the report reads where the variant writes
    params = {"compute": {"cpu": {"batch_models": True, "workers": 2}}}
    set_param(params, "compute.cpu.batch_models=false")
    assert params["compute"]["cpu"] == {"batch_models": False, "workers": 2}
    for bad in ("compute.cpu.batch_model=false", "compute.gpu.workers=1", "compute.cpu"):
        with pytest.raises(VariantError, match="compute"):
            set_param(params, bad)
