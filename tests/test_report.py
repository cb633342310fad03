"""Report logic on fixed inputs: claims that hold, do not hold, or cannot be decided."""

from __future__ import annotations

import pytest

from src.paper.report import (
    check_claims,
    claim_adam_sharper,
    claim_flat_gains_balanced,
    claim_flattest_linear_in_m,
    claim_he_sharper,
    claim_interpolation_misleads,
    claim_larger_steps_flatter,
    claim_lr_max_one_over_m,
    render_report,
)
from src.paper.tables import grid_rows, summarize_grid

LRS = [0.5, 1.0, 2.0, 4.0, 8.0]


def row(depth, lr, lam, status="converged"):
    return {
        "depth": depth,
        "lr": lr,
        "status": status,
        "lambda_max": lam if status == "converged" else None,
    }


def paper_like_grid(scale=1.0):
    """lambda_max falls with lr, lr_max = 8/m, flattest lambda grows linearly in m."""
    rows = []
    for depth in (2, 4, 8):
        for lr in LRS:
            converged = lr <= 8.0 / depth
            rows.append(
                row(depth, lr, scale * depth / lr, "converged" if converged else "diverged")
            )
    return rows


def test_paper_like_grid_supports_all_grid_claims():
    rows = paper_like_grid()
    assert claim_larger_steps_flatter(rows).holds is True
    lr_claim = claim_lr_max_one_over_m(rows, LRS)
    assert lr_claim.holds is True
    assert lr_claim.numbers["fit"]["exponent"] == pytest.approx(-1.0)
    flat = claim_flattest_linear_in_m(rows)
    # flattest at each depth: lambda = m / (8 / m) = m^2 / 8 -> increasing; R^2 of a line on m^2
    assert flat.numbers["fit"]["slope"] > 0


def test_claims_that_do_not_hold_are_reported_as_such():
    # sharpness grows with the step size; every step size converges at every depth (capped grid)
    rows = [row(d, lr, d * lr) for d in (2, 4, 8) for lr in LRS]
    steps = claim_larger_steps_flatter(rows)
    assert steps.holds is False and "negative at 0 of 3 depths" in steps.evidence
    capped = claim_lr_max_one_over_m(rows, LRS)
    assert capped.holds is False
    assert capped.numbers["capped_depths"] == [2, 4, 8]
    # flattest sharpness falling with depth
    falling = [row(d, 1.0, 10.0 / d) for d in (2, 4, 8)]
    assert claim_flattest_linear_in_m(falling).holds is False


def test_undecided_when_data_is_missing():
    rows = [row(2, 1.0, 1.0), row(2, 2.0, 0.5, "diverged")]
    assert claim_larger_steps_flatter(rows).holds is None
    assert claim_lr_max_one_over_m(rows, LRS).holds is None
    assert claim_flattest_linear_in_m(rows).holds is None
    assert claim_interpolation_misleads([]).holds is None
    assert claim_interpolation_misleads([]).verdict == "undecided"


def test_he_versus_identity():
    identity = paper_like_grid()
    he_sharper = [
        dict(r, lambda_max=r["lambda_max"] * 3 if r["lambda_max"] else None) for r in identity
    ]
    he_sharper[0] = dict(he_sharper[0], status="diverged", lambda_max=None)  # fewer converge
    assert claim_he_sharper(identity, he_sharper).holds is True
    he_flatter = [
        dict(r, lambda_max=r["lambda_max"] / 3 if r["lambda_max"] else None) for r in identity
    ]
    assert claim_he_sharper(identity, he_flatter).holds is False


def test_table_gains_and_pairs_claims():
    table = {"sgd": {"lambda_max": {"mean": 1.76}}, "adam": {"lambda_max": {"mean": 12.9}}}
    adam = claim_adam_sharper(table)
    assert adam.holds is True and adam.numbers["ratio"] == pytest.approx(12.9 / 1.76)
    table["adam"]["lambda_max"]["mean"] = 2.0
    assert claim_adam_sharper(table).holds is False

    balanced = {"max_gain": [1.0, 1.1, 1.2, 1.0], "maximal_input_gains": [1, 1, 1, 1]}
    wild = {"max_gain": [5.0, 9.0, 3.0, 1.0], "maximal_input_gains": [1, 1, 1, 1]}
    assert claim_flat_gains_balanced({"sgd": [balanced], "adam": [wild]}).holds is True
    assert claim_flat_gains_balanced({"sgd": [wild], "adam": [balanced]}).holds is False

    pairs = [{"flat_looks_sharper_on_line": v} for v in (True, True, True, False)]
    claim = claim_interpolation_misleads(pairs)
    assert claim.holds is True and "3 of 4" in claim.evidence
    assert claim_interpolation_misleads([{"flat_looks_sharper_on_line": False}] * 3).holds is False


def test_render_report_lists_every_claim_with_its_verdict():
    identity = paper_like_grid()
    table = {
        "sgd": {
            "seeds": 4,
            "final_train_loss": {"mean": 0.03, "std": 0.001},
            "final_val_loss": {"mean": 0.03, "std": None},
            "lambda_max": {"mean": 1.0, "std": 0.1, "paper": {"mean": 1.76, "std": 9.43e-3}},
        },
        "adam": {
            "seeds": 4,
            "final_train_loss": {"mean": 0.03, "std": 0.001},
            "final_val_loss": {"mean": 0.03, "std": None},
            "lambda_max": {"mean": 1.5, "std": 0.2},
        },
    }
    claims = check_claims(identity, identity, LRS, table, {}, [])
    text = render_report(
        "cpu", "notes here", claims, table, [("Fig", "../figures/f.png")], {}, None, None
    )
    for claim in claims:
        assert claim.statement in text
    assert "**does not hold**" in text  # Adam only 1.5x sharper
    assert "**undecided**" in text  # no gains, no pairs
    assert "1.76 ± 0.00943" in text  # the paper's number beside ours
    assert "![Fig](../figures/f.png)" in text


def test_grid_rows_and_summary_from_results():
    def result(depth, lr, status, lam):
        return {
            "key": f"k{depth}{lr}",
            "status": status,
            "epochs": 3,
            "final_train_loss": 0.1,
            "final_val_loss": float("nan") if status == "diverged" else 0.1,
            "config": {
                "model": {"depth": depth},
                "optimizer": {"lr": lr, "name": "sgd"},
                "seed": 0,
                "init": {"name": "identity"},
            },
            "analysis": {"lambda_max": lam} if lam else {"skipped": "diverged"},
        }

    rows = grid_rows(
        [
            result(2, 1.0, "converged", 0.5),
            result(2, 2.0, "converged", 0.2),
            result(4, 1.0, "converged", 0.9),
            result(4, 2.0, "diverged", None),
        ]
    )
    assert rows[1]["lr_times_lambda_max"] == pytest.approx(0.4)
    assert rows[3]["final_val_loss"] is None
    summary = summarize_grid(rows)
    assert summary["runs_converged"] == 3 and summary["runs_diverged"] == 1
    assert summary["flattest_lambda_max"] == {"2": 0.2, "4": 0.9}
    assert summary["largest_converged_lr"] == {"2": 2.0, "4": 1.0}
    assert summary["lr_max_vs_depth_fit"]["exponent"] == pytest.approx(-1.0)
