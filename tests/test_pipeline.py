"""The DVC pipeline end to end, in a temporary git + DVC copy of the repo: the `paper` profile
rehearsed at miniature size (issue 22 item 7). Its code paths are the paper's (the full MNIST
loader reading tiny 28x28 IDX files the test writes, 784-wide nets, the presets' overrides,
in-process training); its sizes are shrunk (two depths, two step sizes, a few epochs). One
`dvc repro` serves every test of the module: what reruns, plots, resuming a killed grid."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import (
    ALL_STAGES,
    COPY_IGNORE,
    REPO,
    all_runs,
    run_ok,
    stage_env,
    stages_ran,
    write_idx,
)

pytestmark = pytest.mark.slow  # end to end: see `make test-fast`

FIGURES = [
    "fig4a_sharpness_identity",
    "fig4b_flattest_vs_depth",
    "fig4c_stability_identity",
    "fig5a_sharpness_he",
    "fig5b_training_curves",
    "fig6_gains",
    "fig7_cross_sections",
    "fig4d_lr_max_boundary",
    "linear_check",
]
METRICS = [
    "results/grid_identity/summary.json",
    "results/grid_he/summary.json",
    "results/curves/summary.json",
    "results/flat_vs_sharp/summary.json",
    "results/linear_check/summary.json",
    "results/boundary/boundary.json",
    "results/theory/metrics.json",
    "reports/claims.json",
]


def shrink(params: dict) -> dict:
    """The paper profile at rehearsal size: same presets and code paths, tiny budgets."""
    params["profile"] = "paper"
    params["training"]["paper"]["overrides"] += [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "callbacks.convergence.window=1",
        "callbacks.convergence.tol=5e-2",
        "analysis.sharpness.tol=1e-2",
    ]
    for grid in ("grid_identity", "grid_he"):
        params[grid]["paper"].update(depths=[2, 3], lrs=[0.5, 1000])
    params["curves"]["paper"].update(depth=3, lr=0.5)
    params["boundary"]["paper"].update(max_rounds=1, max_lr=2000)
    fvs = params["flat_vs_sharp"]["paper"]
    fvs.update(
        depth=2,
        seeds=[0, 1],
        chunk_size=128,
        line_points=5,
        closeup_points=3,
        eigen_points=3,
        gain_radius_restarts=2,
        gain_radius_steps=3,
    )
    fvs["overrides"] += [
        "analysis.sharpness.tol=1e-2",
        "analysis.trace.min_probes=2",
        "analysis.trace.max_probes=4",
        "analysis.density.probes=1",
        "analysis.density.lanczos_steps=6",
        "analysis.gains.restarts=2",
        "analysis.gains.steps=3",
    ]
    params["linear_check"]["paper"].update(depths=[1, 2], lrs=[0.4])
    params["linear_check"]["paper"]["overrides"] = [
        o if not o.startswith("trainer.max_epochs") else "trainer.max_epochs=200"
        for o in params["linear_check"]["paper"]["overrides"]
    ]
    params["theory"]["paper"].update(
        seeds=1,
        findings_cases=1,
        findings_dims=[[2, 2, 2]],
        figures={"fig3_dim": 3, "fig3_depth": 3, "fig3_networks": 1},
    )
    return params


def edit_params(work: Path, edit) -> None:
    """Apply `edit` to the copy's params.yaml (a dict), as a user editing the file would."""
    path = work / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the repository with the rehearsal-size paper profile and tiny IDX
    files of MNIST in its data/, after a first `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline")
    work = root / "repo"
    shutil.copytree(REPO, work, ignore=COPY_IGNORE)
    edit_params(work, shrink)
    write_idx(work / "data", "MNIST", n_train=200, n_test=50)
    env = stage_env(root)
    env.pop("FLATMINIMA_DATA_DIR", None)  # the profile's default: data/ in the checkout
    dvc = str(Path(sys.executable).with_name("dvc"))
    run_ok(["git", "init", "-q"], work, env)
    run_ok(["git", "add", "-A"], work, env)
    first = run_ok([dvc, "repro"], work, env, timeout=1200)
    return {"work": work, "env": env, "dvc": dvc, "first": first, "root": root}


def test_every_stage_runs_and_writes_its_outputs(project):
    work = project["work"]
    assert stages_ran(project["first"]) == ALL_STAGES
    for name in FIGURES:
        for ext in ("png", "pdf"):
            path = work / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
    for name in ("fig1_scalar_valley", "fig2_interpolation", "fig3_gains"):
        assert (work / "figures" / "theory" / f"{name}.png").stat().st_size > 1000
    for path in METRICS:
        assert (work / path).stat().st_size > 10, path
    report = (work / "reports" / "REPORT.md").read_text()
    assert "profile **paper**" in report and "## Table S1" in report
    # the paper profile's own settings reached the runs: the presets' grids and Table S1
    grid = json.loads((work / "results/grid_he/summary.json").read_text())
    assert grid["runs"] == 4
    rows = (work / "results/grid_identity/grid.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",identity,sgd," in r for r in rows[1:])
    table = json.loads((work / "results/flat_vs_sharp/table_s1.json").read_text())
    assert set(table) >= {"sgd", "adam", "sam"}
    assert table["sgd"]["lambda_max"]["paper"]["mean"] == pytest.approx(1.76)
    assert [r["seed"] for r in table["adam"]["runs"]] == [0, 1]
    # every training run is an MLflow run in the experiment named after its stage
    runs = all_runs(project["env"]["MLFLOW_TRACKING_URI"])
    import mlflow

    client = mlflow.MlflowClient(project["env"]["MLFLOW_TRACKING_URI"])
    names = {client.get_experiment(r.info.experiment_id).name for r in runs}
    assert {
        "grid_identity",
        "grid_he",
        "flat_vs_sharp",
        "linear_check",
        "theory",
        "report",
    } <= names
    # the curves stage's runs (depth 3, lr 0.5) are runs of the grids: read, not retrained
    curve_keys = {p.name for p in (work / "results" / "curves" / "runs").glob("*.json")}
    grid_keys = {
        p.name
        for grid in ("grid_identity", "grid_he")
        for p in (work / "results" / grid / "runs").glob("*.json")
    }
    assert len(curve_keys) == 2 and curve_keys <= grid_keys
    grid_runs = [
        r for r in runs if client.get_experiment(r.info.experiment_id).name == "grid_identity"
    ]
    assert len(grid_runs) == 4 and all(r.info.status == "FINISHED" for r in grid_runs)
    summary = [r for r in runs if client.get_experiment(r.info.experiment_id).name == "report"]
    (summary_run,) = summary
    artifacts = {a.path for a in client.list_artifacts(summary_run.info.run_id)}
    assert {"REPORT.md", "claims.json", "figures"} <= artifacts
    metrics_out = run_ok([project["dvc"], "metrics", "show", "--json"], work, project["env"])
    assert "runs_converged" in metrics_out


def test_second_repro_runs_nothing(project):
    out = run_ok([project["dvc"], "repro"], project["work"], project["env"])
    assert stages_ran(out) == set(), out


def _vega_specs(html: str) -> dict[str, dict]:
    """The Vega-Lite specs `dvc plots show` embeds in its HTML, by plot id."""
    specs = {}
    decoder = json.JSONDecoder()
    pattern = r'id\s*=\s*"([^"]+)"\s*>\s*<script[^>]*>\s*var spec\s*=\s*'
    for match in re.finditer(pattern, html):
        specs[match.group(1)], _ = decoder.raw_decode(html, match.end())
    return specs


def _marks(spec: dict) -> list[str]:
    """Every mark type of a (layered, faceted) spec."""
    inner = spec.get("spec", spec)
    found = [inner["mark"]] if "mark" in inner else []
    found += [layer["mark"] for layer in inner.get("layer", [])]
    return [m["type"] if isinstance(m, dict) else m for m in found]


def test_dvc_plots_show_renders_every_grid(project):
    work, env = project["work"], project["env"]
    out = project["root"] / "dvc_plots"
    run_ok([project["dvc"], "plots", "show", "-o", str(out)], work, env)
    html = (out / "index.html").read_text()
    specs = _vega_specs(html)

    def rows(path: str) -> list[dict]:
        with (work / path).open() as handle:
            return list(csv.DictReader(handle))

    # the lambda_max heatmap of each grid: depth x lr tiles, every run of the grid in it,
    # converged tiles coloured by lambda_max and the others labelled with their status
    for init in ("identity", "he"):
        spec = specs[f"lambda_max_{init}"]
        data = spec["data"]["values"]
        grid = rows(f"results/grid_{init}/grid.csv")
        assert len(data) == len(grid) > 0 and {d["init"] for d in data} == {init}
        assert {(d["depth"], d["lr"], d["status"]) for d in data} == {
            (g["depth"], g["lr"], g["status"]) for g in grid
        }
        encoding = spec["spec"]["encoding"]
        assert (encoding["x"]["field"], encoding["y"]["field"]) == ("lr", "depth")
        assert encoding["x"]["type"] == encoding["y"]["type"] == "ordinal"
        assert _marks(spec).count("rect") == 2 and "text" in _marks(spec)
        colour = spec["spec"]["layer"][0]
        assert colour["encoding"]["color"]["field"] == "lambda_max"
        assert "converged" in json.dumps(colour["transform"])

    # the bisection towards lr_max(m): every grid run and probe of the boundary stage
    spec = specs["stability_boundary"]
    boundary = rows("results/boundary/boundary.csv")
    assert len(spec["data"]["values"]) == len(boundary) > 0
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"]) == ("depth", "lr")
    assert spec["encoding"]["color"]["field"] == "status"

    # lr_max(m) per depth, with its bracket (a row per depth, bracketed or not)
    spec = specs["lr_max_curve"]
    lr_max = rows("results/boundary/lr_max.csv")
    assert len(spec["data"]["values"]) == len(lr_max) > 0
    assert (spec["encoding"]["x"]["field"], spec["layer"][1]["encoding"]["y"]["field"]) == (
        "depth",
        "lr_max",
    )

    # the training curves, train and validation loss per init
    spec = specs["training_curves"]
    data = spec["data"]["values"]
    assert {d["init"] for d in data} == {"identity", "he"}
    assert {d["field"] for d in data} == {"train_loss", "val_loss"}
    assert len(data) == 2 * len(rows("results/curves/curves.csv"))
    assert spec["encoding"]["x"]["field"] == "iteration"
    assert spec["encoding"]["color"]["field"] == "init"
    assert _marks(spec) == ["line"]

    # the matplotlib figures stay in the page
    for name in FIGURES:
        if name != "linear_check":
            assert f"static/workspace_figures_{name}.png" in html, name
            assert (out / "static" / f"workspace_figures_{name}.png").stat().st_size > 1000


def test_changing_one_grid_reruns_only_that_grid_and_dependents(project):
    work, env = project["work"], project["env"]
    edit_params(work, lambda p: p["grid_he"]["paper"].update(lrs=[0.5, 0.25, 1000]))
    before = len(all_runs(env["MLFLOW_TRACKING_URI"]))
    out = run_ok([project["dvc"], "repro"], work, env)
    # curves reads the grids' runs (it rereads them and trains nothing)
    assert stages_ran(out) == {"grid@he", "curves", "figures", "report"}, out
    # only the two new (depth, lr=0.25) runs trained, plus the report's summary run
    assert len(all_runs(env["MLFLOW_TRACKING_URI"])) == before + 2 + 1


def test_editing_another_profile_reruns_nothing(project):
    """Stages track their profile's sub-sections only: the cpu profile's grid and compute
    settings are not the paper profile's."""
    work, env = project["work"], project["env"]
    params = work / "params.yaml"
    text = params.read_text()
    try:
        edit_params(work, lambda p: p["grid_he"]["cpu"].update(seeds=[0, 1]))
        edit_params(work, lambda p: p["compute"]["cpu"].update(workers=1))
        out = run_ok([project["dvc"], "status"], work, env)
        assert "up to date" in out, out
        edit_params(work, lambda p: p["grid_he"]["paper"]["depths"].reverse())
        out = run_ok([project["dvc"], "status"], work, env)
        assert "grid@he" in out and "grid@identity" not in out, out
    finally:
        params.write_text(text)


def test_interrupted_grid_resumes_without_retraining(project):
    work, env = project["work"], project["env"]
    runs_dir = work / "results" / "grid_identity" / "runs"
    shutil.rmtree(runs_dir)
    cmd = [sys.executable, "-m", "pipelines.grid", "--stage", "grid_identity"]
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not list(runs_dir.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the harshest interruption: no cleanup at all
    proc.wait()
    finished = {p.name for p in runs_dir.glob("*.json")}
    assert 1 <= len(finished) < 4, finished
    stamps = {name: (runs_dir / name).stat().st_mtime_ns for name in finished}
    run_ok(cmd, work, env)
    after = {p.name for p in runs_dir.glob("*.json")}
    assert len(after) == 4 and finished <= after
    # the runs finished before the interruption were not trained again
    assert all((runs_dir / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    assert not list(runs_dir.glob(".*.tmp"))  # no half-written result left behind


def test_stage_with_bad_params_fails_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        (REPO / "params.yaml").read_text().replace("\nprofile: cpu\n", "\nprofile: nope\n")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.grid",
            "--stage",
            "grid_identity",
            "--params",
            str(params),
            "--root",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=stage_env(tmp_path),
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: params.yaml: missing key 'grid_identity.nope'"
    )
    assert not (tmp_path / "results").exists()
