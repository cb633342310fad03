"""The verification command: every claim, its JSON report, and its exit status."""

import json

from src.theory import verify


def test_all_claims_pass_on_a_quick_set():
    report = verify.verify(cases=2, base_seed=7, findings_cases=0)
    assert set(report["claims"]) == set(verify.CLAIMS)
    for name, claim in report["claims"].items():
        assert claim["cases"] >= 1, name
        assert claim["passed"], (name, claim)
        assert claim["worst_error"] <= claim["tolerance"] == verify.CLAIMS[name].tolerance
    assert report["all_passed"]


def test_cli_writes_json_and_signals_failure(tmp_path, monkeypatch):
    out = tmp_path / "v.json"
    args = ["--out", str(out), "--seeds", "1", "--findings-cases", "0"]
    assert verify.main(args) == 0
    report = json.loads(out.read_text())
    claim = report["claims"]["lemma3_hessian_phi_vs_autograd"]
    assert set(claim) >= {"cases", "worst_error", "tolerance", "passed"}
    assert claim["tolerance"] == 1e-10 and claim["passed"] is True
    # A claim whose error exceeds its tolerance makes the command fail (non-zero exit).
    strict = dict(verify.CLAIMS)
    strict["lemma3_hessian_phi_vs_autograd"] = verify.Claim(-1.0, "impossible")
    monkeypatch.setattr(verify, "CLAIMS", strict)
    assert verify.main(args) == 1
    assert (
        json.loads(out.read_text())["claims"]["lemma3_hessian_phi_vs_autograd"]["passed"] is False
    )


def test_findings_report_the_nonwhite_gap_and_the_paper_walk():
    findings = verify.run_findings(1, 0, dims_list=[(2, 2, 2)])
    gap = findings["nonwhite_minimax_conjecture"]
    assert len(gap["cases"]) == 1 and not gap["cases"][0]["white"]
    assert gap["relative_gap_min"] >= -1e-10  # max nu <= min lambda_max (eq. 23-25)
    assert abs(gap["white_control_relative_gap_max"]) < 1e-8  # white: both sides equal (26)-(29)
    walk = findings["paper_random_walk"]
    assert len(walk["cases"]) == 6 and 0.0 <= walk["fraction_reached_1e-3"] <= 1.0
