"""Helpers for the theory tests (a module of its own, so it never clashes with a conftest)."""

from src.theory import verify


def run_claims(experiment: str, cases: int) -> dict:
    """Run ``cases`` cases of a verify experiment; {claim: {"cases", "parts"}}."""
    return verify.run_experiment(experiment, cases, base_seed=123)


def assert_claims_hold(results: dict) -> None:
    """Every checked part of every claim is within the claim's tolerance from verify.CLAIMS."""
    assert results, "no claim was evaluated"
    for claim, entry in results.items():
        tolerance = verify.CLAIMS[claim].tolerance
        for part, value in entry["parts"].items():
            if part.startswith("info_"):
                continue
            assert value <= tolerance, f"{claim}/{part}: {value:.3g} > {tolerance:g}"
