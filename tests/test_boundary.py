"""The stability boundary by bisection (src.experiments.boundary, pipelines.boundary): the
bracket logic, the bisection driver with a fake trainer, the power-law fit's interval, the
figure from saved numbers, the stage on the tiny profile, and the worker-process launcher."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
import yaml
from support import REPO, all_runs

from pipelines.boundary import main as boundary_stage
from src.core.errors import UserError
from src.core.files import read_csv, write_csv
from src.core.status import STABILITY_FAILURES
from src.experiments.boundary import bisect_boundary, bracket
from src.experiments.grid import run_grid, sweeps_of
from src.paper.boundary import (
    BRACKETED,
    NO_MINIMUM,
    OPEN_ABOVE,
    READING_FIELDS,
    WITH_EDGE,
    boundary_counting_edge,
    boundary_summary,
    bracket_slope_range,
    loglog_fit,
    power_law_fit,
    probe_rows,
    stability_comparison,
    with_probes,
)
from src.paper.boundary_figure import boundary_figure

RES = 2.0**0.25


def runs(*pairs):
    """rows from (lr, status) pairs; reason and key made up from them."""
    return [{"lr": lr, "status": s, "reason": f"why_{s}", "key": f"k{lr}"} for lr, s in pairs]


# --- the bracket ------------------------------------------------------------------------------


def test_stability_failures_are_diverged_and_unstable():
    assert set(STABILITY_FAILURES) == {"diverged", "unstable"}


def test_bracketed_by_the_first_stability_failure_above_the_converged_runs():
    b = bracket(2, runs((0.5, "converged"), (1, "converged"), (2, "unstable"), (4, "diverged")))
    assert (b.state, b.lo, b.hi, b.ratio) == (BRACKETED, 1.0, 2.0, 2.0)
    assert b.lo_run["key"] == "k1" and b.hi_run["status"] == "unstable"
    assert b.between == [] and b.non_monotone == []


def test_open_above_when_nothing_above_fails_for_stability():
    b = bracket(4, runs((0.5, "converged"), (1, "converged"), (2, "budget_exhausted")))
    assert (b.state, b.lo, b.hi, b.ratio) == (OPEN_ABOVE, 1.0, None, None)
    assert [r["lr"] for r in b.between] == [2.0]  # the empty tile above is not instability


def test_no_minimum_without_a_converged_run():
    b = bracket(6, runs((0.5, "plateau"), (1, "diverged")))
    assert (b.state, b.lo, b.hi) == (NO_MINIMUM, None, None)
    assert {r["status"] for r in b.between} == {"plateau", "diverged"}


def test_non_stability_failures_inside_the_bracket_are_noted():
    b = bracket(
        2,
        runs(
            (1, "converged"),
            (2, "plateau"),
            (3, "unverified"),
            (4, "budget_exhausted"),
            (8, "diverged"),
        ),
    )
    assert (b.state, b.lo, b.hi) == (BRACKETED, 1.0, 8.0)
    assert [(r["lr"], r["status"]) for r in b.between] == [
        (2.0, "plateau"),
        (3.0, "unverified"),
        (4.0, "budget_exhausted"),
    ]


def test_non_monotone_data_is_reported_not_hidden():
    b = bracket(2, runs((1, "converged"), (2, "diverged"), (4, "converged"), (8, "diverged")))
    assert (b.state, b.lo, b.hi) == (BRACKETED, 1.0, 2.0)  # the first loss of stability
    assert b.non_monotone == [4.0]
    below = bracket(2, runs((0.25, "diverged"), (1, "converged"), (2, "unstable")))
    assert (below.lo, below.hi, below.non_monotone) == (1.0, 2.0, [1.0])


def test_an_edge_run_moves_the_with_edge_lo_up_not_the_strict_one():
    rows = runs((1, "converged"), (1.41, "edge_of_stability"), (2, "unstable"), (4, "diverged"))
    strict, edge = bracket(2, rows), bracket(2, rows, WITH_EDGE)
    assert (strict.state, strict.lo, strict.hi) == (BRACKETED, 1.0, 2.0)
    assert [(r["lr"], r["status"]) for r in strict.between] == [(1.41, "edge_of_stability")]
    assert (edge.state, edge.lo, edge.hi, edge.between) == (BRACKETED, 1.41, 2.0, [])
    assert strict.limited_by == edge.limited_by == "edge"  # hi ended unstable
    # an edge-of-stability run is never hi: the boundary above it is the diverged run
    diverged = runs((1, "converged"), (2, "edge_of_stability"), (4, "diverged"))
    assert (bracket(2, diverged).hi, bracket(2, diverged).limited_by) == (4.0, "divergence")
    assert bracket(2, diverged, WITH_EDGE).lo == 2.0
    assert bracket(2, runs((1, "converged"))).limited_by is None


def test_edge_runs_alone_are_a_minimum_only_with_edge_and_non_monotone_per_reading():
    rows = runs((1, "edge_of_stability"), (2, "diverged"))
    assert bracket(3, rows).state == NO_MINIMUM
    assert (bracket(3, rows, WITH_EDGE).state, bracket(3, rows, WITH_EDGE).lo) == (BRACKETED, 1.0)
    above = runs((1, "converged"), (2, "unstable"), (4, "edge_of_stability"))
    assert bracket(3, above).non_monotone == []
    assert bracket(3, above, WITH_EDGE).non_monotone == [4.0]


# --- the bisection driver ---------------------------------------------------------------------


def threshold_trainer(limits: dict[int, float], calls: list, budget_at=None):
    """A fake train_points: converged below the depth's limit, diverged above; `budget_at`
    (depth, lr) -> a run that ran out of budget instead."""

    def train_points(points):
        calls.append(list(points))
        rows = []
        for depth, lr in points:
            if budget_at and budget_at(depth, lr):
                status, reason = "budget_exhausted", "still_improving"
            elif lr <= limits[depth]:
                status, reason = "converged", "stationary_below_affine"
            else:
                status, reason = "diverged", "loss_above_divergence_factor"
            rows.append({"status": status, "reason": reason, "key": f"{depth}-{lr}"})
        return rows

    return train_points


def grid_of(limits: dict[int, float], lrs=(0.5, 1, 2, 4, 8, 16)):
    return [
        {"depth": d, "lr": lr, "status": "converged" if lr <= limit else "diverged"}
        for d, limit in limits.items()
        for lr in lrs
    ]


def test_bisection_reaches_the_resolution_in_two_rounds_from_a_factor_two_grid():
    limits = {2: 5.0, 4: 2.5, 8: 1.2}
    calls: list = []
    out = bisect_boundary(grid_of(limits), threshold_trainer(limits, calls), resolution=RES)
    # factor 2 -> 2^(1/2) -> 2^(1/4): two rounds, every depth in each round (trained together)
    assert len(calls) == 2 and all(len(c) == 3 for c in calls)
    for depth, limit in limits.items():
        entry = out[depth]
        lo, hi = entry["bracket"]
        assert entry["state"] == BRACKETED and entry["resolution_reached"]
        assert lo <= limit < hi and hi / lo == pytest.approx(RES, rel=1e-6)
        assert entry["lr_max"] == lo and entry["rounds"] == 2
        assert [p["round"] for p in entry["probes"]] == [1, 2]
        assert entry["stop_reason"].startswith("resolution reached")
    # depth 2: [4, 8] -> mid 5.657 diverges -> [4, 5.657] -> mid 4.757 converges
    assert [p["status"] for p in out[2]["probes"]] == ["diverged", "converged"]
    assert out[2]["hi_run"]["source"] == "probe" and out[2]["lo_run"]["source"] == "probe"


def test_bisection_stops_on_a_budget_failure_and_says_why():
    limits = {2: 5.0, 4: 2.5}
    calls: list = []
    trainer = threshold_trainer(limits, calls, budget_at=lambda d, lr: d == 4)
    out = bisect_boundary(grid_of(limits), trainer, resolution=RES)
    entry = out[4]
    assert [p["status"] for p in entry["probes"]] == ["budget_exhausted"]
    assert not entry["resolution_reached"] and entry["bracket"] == [2.0, 4.0]
    assert "budget_exhausted (still_improving)" in entry["stop_reason"]
    assert [len(c) for c in calls] == [2, 1]  # depth 2 went on alone
    assert out[2]["resolution_reached"]


def test_open_brackets_are_extended_upward_up_to_max_lr():
    limits = {2: 40.0, 4: 1000.0}
    calls: list = []
    out = bisect_boundary(
        grid_of(limits), threshold_trainer(limits, calls), resolution=RES, max_lr=64
    )
    assert [p["lr"] for p in out[2]["probes"]][:2] == [32.0, 64.0]  # 64 diverges: bracketed
    assert out[2]["resolution_reached"] and out[2]["bracket"][0] <= 40 < out[2]["bracket"][1]
    assert out[4]["state"] == OPEN_ABOVE and out[4]["lr_max"] == 64.0
    assert "not bracketed" in out[4]["stop_reason"] and "max_lr 64" in out[4]["stop_reason"]


def test_a_grid_failure_at_the_midpoint_stops_the_search():
    rows = [
        {"depth": 2, "lr": 1, "status": "converged"},
        {"depth": 2, "lr": 2, "status": "plateau", "reason": "stationary_above_affine"},
        {"depth": 2, "lr": 4, "status": "diverged"},
    ]
    out = bisect_boundary(rows, lambda points: pytest.fail("nothing to train"), resolution=RES)
    assert out[2]["probes"] == [] and "plateau" in out[2]["stop_reason"]


def test_max_rounds_and_no_minimum_are_reported():
    limits = {2: 5.0}
    out = bisect_boundary(
        [*grid_of(limits), {"depth": 6, "lr": 1, "status": "plateau"}],
        threshold_trainer(limits, []),
        resolution=RES,
        max_rounds=1,
    )
    assert out[2]["stop_reason"] == "max_rounds (1) reached" and not out[2]["resolution_reached"]
    assert out[6]["state"] == NO_MINIMUM and out[6]["lr_max"] is None


# --- the power-law fit ------------------------------------------------------------------------


def boundaries_of(depths, lows, highs):
    return {
        d: {"depth": d, "state": BRACKETED, "bracket": [lo, hi], "lr_max": lo}
        for d, lo, hi in zip(depths, lows, highs)
    }


def test_a_known_power_law_is_recovered_within_its_interval():
    rng = np.random.default_rng(0)
    depths = [2, 4, 6, 8, 10, 12, 14, 16]
    true = [8.0 / d for d in depths]  # lr_max ~ 8 / m
    lows = [t * RES ** (-rng.uniform(0, 1)) for t in true]  # a 2^(1/4) bracket around it
    highs = [lo * RES for lo in lows]
    fit = power_law_fit(boundaries_of(depths, lows, highs))
    assert fit["n"] == 8 and fit["r2"] > 0.95
    assert fit["ci95"][0] < -1 < fit["ci95"][1]
    assert (
        fit["ci95_with_bracket"][0] <= fit["ci95"][0]
        and fit["ci95"][1] <= fit["ci95_with_bracket"][1]
    )
    assert fit["bracket_range"][0] < -1 < fit["bracket_range"][1]
    assert fit["fit_lo"]["exponent"] == pytest.approx(-1, abs=0.15)


def test_the_bracket_slope_range_is_the_extreme_slope_inside_the_brackets():
    depths, lows, highs = [2.0, 4.0, 8.0], [1.0, 0.5, 0.2], [1.5, 0.7, 0.3]
    least, greatest = bracket_slope_range(depths, lows, highs)
    rng = np.random.default_rng(1)
    for _ in range(200):
        y = [rng.uniform(lo, hi) for lo, hi in zip(lows, highs)]
        slope = loglog_fit(depths, y)["exponent"]
        assert least - 1e-12 <= slope <= greatest + 1e-12
    assert least == pytest.approx(loglog_fit(depths, [1.5, 0.5, 0.2])["exponent"])


def test_open_depths_stay_out_of_the_fit_and_two_points_give_no_interval():
    b = boundaries_of([2, 4], [1.0, 0.5], [1.2, 0.6])
    b[8] = {"depth": 8, "state": OPEN_ABOVE, "bracket": [0.4, None], "lr_max": 0.4}
    fit = power_law_fit(b)
    assert fit["n"] == 2 and fit["ci95"] is None and fit["ci95_with_bracket"] is None
    assert fit["excluded_depths"] == {"8": OPEN_ABOVE}


def test_flattest_minimum_beside_two_over_lr_max():
    b = boundaries_of([2, 4], [4.0, 2.0], [4.76, 2.38])
    grid = [
        {"depth": 2, "lr": 1, "status": "converged", "lambda_max": 0.9},
        {"depth": 2, "lr": 4, "status": "converged", "lambda_max": 0.4},
        {"depth": 2, "lr": 8, "status": "plateau", "lambda_max": 0.05},  # no minimum: ignored
        {"depth": 4, "lr": 2, "status": "converged", "lambda_max": 0.8},
    ]
    table = stability_comparison(
        b, grid, [{"depth": 4, "lr": 2.3, "status": "converged", "lambda_max": 0.7}]
    )
    assert table[0]["flattest_lambda_max"] == 0.4 and table[0]["two_over_lr_max"] == 0.5
    assert table[1]["flattest_lambda_max"] == 0.8
    assert table[1]["flattest_lambda_max_with_probes"] == 0.7


def test_the_figure_is_drawn_from_saved_numbers(tmp_path):
    depths = [2, 4, 8]
    b = boundaries_of(depths, [4.0, 2.0, 1.0], [4.76, 2.38, 1.19])
    b[16] = {"depth": 16, "state": OPEN_ABOVE, "bracket": [0.5, None], "lr_max": 0.5}
    b[20] = {"depth": 20, "state": NO_MINIMUM, "bracket": [None, None], "lr_max": None}
    payload = {
        "resolution": RES,
        "depths": {str(d): v for d, v in b.items()},
        "fit": power_law_fit(b),
        "stability": stability_comparison(b, []),
    }
    payload = json.loads(json.dumps(payload))  # as read back from boundary.json
    path = boundary_figure(payload, tmp_path / "fig4d.png")
    assert path.stat().st_size > 1000 and path.with_suffix(".pdf").stat().st_size > 1000


def edge_trainer(calls: list):
    """A fake train_points: every probe ends at the edge of stability (seed 0)."""

    def train_points(points):
        calls.append(list(points))
        return [
            {
                "status": "edge_of_stability",
                "reason": "lr_lambda_within_band",
                "seed": 0,
                "lambda_max": 2.0 / lr,
                "key": f"{depth}-{lr}",
            }
            for depth, lr in points
        ]

    return train_points


def bisected_summary():
    """Depths 2-4 bracketed by the grid at [16/m, 32/m] (depth 2 by divergence, 3 and 4 by an
    unstable run); every probe ends at the edge of stability: a minimum of the with-edge
    reading, which the search refines (SEARCH_READING), so it goes on to the resolution."""
    grid = [
        {"depth": d, "lr": lr, "seed": 0, "status": s, "lambda_max": 1.0, "key": f"{d}-{lr}"}
        for d in (2, 3, 4)
        for lr, s in (
            (16.0 / d, "converged"),
            (32.0 / d, "diverged" if d == 2 else "unstable"),
        )
    ]
    calls = []
    boundaries = bisect_boundary(grid, edge_trainer(calls), resolution=RES, max_rounds=4)
    assert len(calls) == 2  # [8, 16] x 2 -> x 2^(1/2) -> x 2^(1/4): two rounds per depth
    search = {"resolution": RES, "max_rounds": 4, "max_lr": None}
    return json.loads(json.dumps(boundary_summary("grid_identity", search, boundaries, grid)))


def test_boundary_json_holds_both_readings_and_what_limits_each_depth():
    summary = bisected_summary()
    two, four = summary["depths"]["2"], summary["depths"]["4"]
    assert (two["lr_max"], two["limited_by"], four["limited_by"]) == (8.0, "divergence", "edge")
    mid = math.sqrt(math.sqrt(8.0 * 16.0) * 16.0)  # the second probe
    assert two["with_edge"]["lr_max"] == pytest.approx(mid)
    assert two["with_edge"]["bracket"] == [pytest.approx(mid), 16.0]
    assert two["with_edge"]["resolution_reached"] and not two["resolution_reached"]
    assert set(two["with_edge"]) >= {"lr_max", "bracket", "state", "non_monotone", "limited_by"}
    assert two["with_edge"]["limited_by"] == "divergence" and two["with_edge"]["non_monotone"] == []
    assert [r["status"] for r in two["between"]] == ["edge_of_stability"] * 2
    assert summary["fit"]["n"] == summary["fit_with_edge"]["n"] == 3
    assert summary["fit"]["edge_limited_only"]["depths"] == [3, 4]
    assert two["probes"][0]["seed"] == 0  # a probe keeps its seed (claims 1 and 3 match on it)


def test_boundary_counting_edge_has_the_strict_shape_with_the_with_edge_values():
    summary = bisected_summary()
    counted = boundary_counting_edge(summary)
    assert set(counted) == set(summary) - {"fit_with_edge"}
    assert counted["fit"] == summary["fit_with_edge"]
    for depth, entry in summary["depths"].items():
        assert set(counted["depths"][depth]) == set(entry) - {"with_edge"}
        for key in READING_FIELDS:
            assert counted["depths"][depth][key] == entry["with_edge"][key]
        assert counted["depths"][depth]["probes"] == entry["probes"]
    row = counted["stability"][0]
    assert row["lr_max"] == summary["depths"]["2"]["with_edge"]["lr_max"]
    assert row["two_over_lr_max"] == pytest.approx(2.0 / row["lr_max"])
    assert summary["depths"]["2"]["lr_max"] == 8.0  # the strict json is left as it was
    assert [r["lr_max"] for r in summary["stability"]] == [8.0, 16.0 / 3, 4.0]


def test_probes_join_the_grid_once_and_only_as_minima():
    summary = bisected_summary()
    probes = probe_rows(summary)
    assert [(p["depth"], p["status"]) for p in probes] == [
        (d, "edge_of_stability") for d in (2, 2, 3, 3, 4, 4)
    ]
    assert probe_rows(None) == []
    grid = [{"depth": 2, "lr": 1.0, "seed": 0, "status": "converged", "lambda_max": 1.0}]
    new = [
        {"depth": 2, "lr": 1.0, "seed": 0, "status": "converged", "lambda_max": 0.1},  # on grid
        {"depth": 2, "lr": 1.0 + 1e-12, "seed": 0, "status": "converged", "lambda_max": 0.1},
        {"depth": 2, "lr": 1.0, "seed": None, "status": "converged", "lambda_max": 0.1},
        {"depth": 2, "lr": 1.0, "seed": 1, "status": "converged", "lambda_max": 0.5},  # new seed
        {"depth": 2, "lr": 1.41, "seed": 0, "status": "converged", "lambda_max": 0.7},
        {"depth": 2, "lr": 1.41, "seed": 0, "status": "converged", "lambda_max": 0.7},  # again
        {"depth": 2, "lr": 2.0, "seed": 0, "status": "edge_of_stability", "lambda_max": 0.9},
    ]
    joined = with_probes(grid, new)
    assert [(r["lr"], r["seed"], r.get("source")) for r in joined] == [
        (1.0, 0, None),
        (1.0, 1, "probe"),
        (1.41, 0, "probe"),
    ]
    # counted as minima (a relabelled copy), the edge probe joins too
    relabelled = [dict(p, status="converged") if p["lr"] == 2.0 else p for p in new]
    assert [r["lr"] for r in with_probes(grid, relabelled)][-1] == 2.0


def test_the_figure_marks_what_limits_each_depth(tmp_path):
    summary = bisected_summary()
    summary["depths"]["3"]["non_monotone"] = [16.0]
    path = boundary_figure(summary, tmp_path / "fig4d.png")
    assert path.stat().st_size > 1000
    assert boundary_figure(boundary_counting_edge(summary), tmp_path / "edge.png").exists()


# --- the stage ----------------------------------------------------------------------------------


def test_the_stage_is_wired_into_dvc():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stage = dvc["stages"]["boundary"]
    assert {"src/experiments", "src/training", "pipelines/boundary.py"} <= set(stage["deps"])
    assert "results/grid_identity/grid.csv" in stage["deps"]
    assert {"grid_identity.${profile}", "boundary.${profile}"} <= set(stage["params"])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ("cpu", "paper", "tiny"):
        settings = params["boundary"][profile]
        assert 2 ** float(settings["resolution_exponent"]) <= RES + 1e-12


@pytest.mark.slow
def test_the_stage_bisects_a_grid_with_real_training_on_the_tiny_profile(tmp_path, mlflow_uri):
    """A made-up grid (depth 1 converged at lr 0.5, diverged at 1000) bisected by real tiny
    trainings; a second run of the stage trains nothing."""
    params = tmp_path / "params.yaml"
    params.write_text(
        (REPO / "params.yaml").read_text().replace("\nprofile: cpu\n", "\nprofile: tiny\n")
    )
    grid = [
        {"depth": 1, "lr": 0.5, "seed": 0, "status": "converged", "lambda_max": 0.2, "key": "a"},
        {"depth": 1, "lr": 1000.0, "seed": 0, "status": "diverged", "key": "b"},
    ]
    write_csv(tmp_path / "results" / "grid_identity" / "grid.csv", grid)
    assert boundary_stage(["--params", str(params), "--root", str(tmp_path)]) == 0
    out = tmp_path / "results" / "boundary"
    result = json.loads((out / "boundary.json").read_text())
    depth = result["depths"]["1"]
    assert depth["probes"] and depth["probes"][0]["lr"] == pytest.approx(math.sqrt(500), rel=1e-9)
    assert all(p["status"] and p["reason"] and p["key"] for p in depth["probes"])
    assert depth["stop_reason"]
    rows = read_csv(out / "boundary.csv")
    assert [r["source"] for r in rows].count("probe") == len(depth["probes"])
    stored = sorted(p.stem for p in (out / "runs").glob("*.json"))
    assert stored == sorted(p["key"] for p in depth["probes"])
    assert (tmp_path / "figures" / "fig4d_lr_max_boundary.pdf").stat().st_size > 1000
    assert len(all_runs(mlflow_uri)) == len(depth["probes"])
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert boundary_stage(["--params", str(params), "--root", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    assert len(all_runs(mlflow_uri)) == len(depth["probes"])


# --- worker processes ---------------------------------------------------------------------------

TINY_RUN = [
    "dataset=mnist5k",
    "dataset.resolution=7",
    "dataset.limit_train=200",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "analysis=off",
    "depth=1",
]


@pytest.mark.slow
def test_worker_processes_give_the_results_of_the_in_process_grid(tmp_path, mlflow_uri, caplog):
    caplog.set_level(logging.INFO, logger="src.experiments.progress")
    axes = {"lr": [0.5, 0.25]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same arithmetic, the same numbers
    try:
        alone = run_grid(TINY_RUN, axes, tmp_path / "inprocess", batch_models=False)
    finally:
        torch.set_num_threads(threads)
    pooled = run_grid(
        TINY_RUN,
        axes,
        tmp_path / "processes",
        launcher="processes",
        workers=2,
        batch_models=False,
    )
    assert [r["key"] for r in pooled] == [r["key"] for r in alone]  # grid order kept
    for a, b in zip(alone, pooled):
        assert b["status"] == a["status"] and b["epochs"] == a["epochs"]
        assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=1e-6)
    assert len(list((tmp_path / "processes").glob("*.json"))) == 2
    # The pool reports each run as it finishes: k of N, elapsed, and (before the last) the
    # time left.
    progress = [r.getMessage() for r in caplog.records if r.name == "src.experiments.progress"]
    done = [m for m in progress if " done (" in m]
    assert [m.split(" done")[0] for m in done[-2:]] == ["grid: run 1 of 2", "grid: run 2 of 2"]
    assert "about" in done[-2] and "left" in done[-2] and "left" not in done[-1]
    assert "depth=1 init=identity sgd lr=" in done[-1]
    runs = all_runs(mlflow_uri)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    caplog.clear()
    again = run_grid(TINY_RUN, axes, tmp_path / "processes", launcher="processes")
    assert again == pooled and len(all_runs(mlflow_uri)) == 4  # stored: nothing retrained
    assert not [r for r in caplog.records if r.name == "src.experiments.progress"]


def test_points_that_are_no_product_become_one_hydra_sweep_per_group():
    jobs = [["depth=2", "lr=1.41"], ["depth=4", "lr=0.84"], ["depth=2", "lr=1.19"]]
    assert sweeps_of(jobs) == [["depth=2", "lr=1.41,1.19"], ["depth=4", "lr=0.84"]]


@pytest.mark.slow
def test_a_bad_value_found_in_a_worker_is_one_line_in_the_parent(tmp_path, mlflow_uri):
    """model.width below the data's dimension is found only once a worker loads the data; the
    parent gets the same one-line error as in-process (a UserError)."""
    with pytest.raises(UserError, match=r"^model\.width: must be >= min"):
        run_grid(
            [*TINY_RUN, "depth=2", "model.width=3"],
            {"lr": [0.5]},
            tmp_path / "runs",
            launcher="processes",
            batch_models=False,
        )
