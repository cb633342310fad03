"""Table S1 and Figs 6-7: SGD's (flat) and Adam's (sharp) minima of a 6-layer denoiser, and
beyond the paper the minima of further methods (SAM) beside them.

`train_methods` trains every (method, seed) run, all in one call; the analysis at the end of
each run measures lambda_max, the gain profile and (when asked) the trace and the density.
`write_outputs` then assembles Table S1 and measures on the saved weights of the runs that
reached a minimum (status `converged`): the loss along the line between every (flat, sharp)
pair and along each minimum's top eigenvector, the curvature each end shows along that line,
the gains at other input radii and on the training inputs, and the eigenvalue density of one
minimum per method. Runs that are not minima are listed with their status and reason, never
measured as minima.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from src.analysis.cross_sections import curvature_along, loss_along_direction, loss_along_line
from src.analysis.gains import gains_at_input_norms, training_input_gains
from src.analysis.landscape import flat_parameters
from src.analysis.spectrum import hessian_spectral_density
from src.core.files import finite_or_none, read_json, write_csv, write_json
from src.core.status import CONVERGED, EDGE_OF_STABILITY
from src.domain.data import TensorData
from src.experiments.grid import run_points
from src.experiments.store import prune_results
from src.paper.tables import table_s1, table_s1_means
from src.training.callbacks import density_settings
from src.training.checkpoint import load_eigenvector, load_model

# Result fields whose files must still exist for a stored run to be reused.
REQUIRED_FILES = ("checkpoint_path", "analysis.eigenvector_path", "analysis.density_path")
# The gain search at several radii (issue 11 item 5): factors of the mean training-input norm,
# cheaper than the main search (defaults when params.yaml leaves them out).
DEFAULT_GAIN_RADII = (0.5, 1.0, 2.0)
DEFAULT_GAIN_RADIUS_RESTARTS = 20
DEFAULT_GAIN_RADIUS_STEPS = 100

Runs = dict[str, list[dict]]  # method -> its runs' stored results, in seed order


def train_methods(
    base_overrides: Sequence[str],
    methods: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    results_dir: Path,
    output_root: Path,
    **options: Any,
) -> Runs:
    """Every (method, seed) run, all in one call (`run_points` with `options`): the methods'
    runs train side by side (one batched model per method and worker), not one method after
    the other. The first seed's analysis also measures the eigenvalue density (the figure's),
    in the worker, batched with the others (`method_density` measures it afterwards when that
    run is not a minimum). The store keeps only these runs."""
    density = ["analysis.density.enabled=true"]
    jobs = [
        [*overrides, f"seed={seed}", *(density if seed == seeds[0] else [])]
        for overrides in methods.values()
        for seed in seeds
    ]
    results = run_points(
        base_overrides,
        jobs,
        results_dir=results_dir,
        output_root=output_root,
        require_files=REQUIRED_FILES,
        **options,
    )
    prune_results(results_dir, [r["key"] for r in results])
    n = len(seeds)
    return {method: results[i * n : (i + 1) * n] for i, method in enumerate(methods)}


# The runs measured as minima (pairs, gain radii, densities): converged ones and those at the
# edge of stability, so that the report can judge every claim with the edge runs counted and
# without (src.report.inputs); each measurement keeps its run's status.
MEASURED_STATUSES = (CONVERGED, EDGE_OF_STABILITY)


def minimum_runs(results: Sequence[dict]) -> list[dict]:
    return [r for r in results if r["status"] in MEASURED_STATUSES]


def _seed(result: Mapping[str, Any]) -> int:
    return int(result["config"]["seed"])


def _model(result: Mapping[str, Any]):
    return load_model(result["checkpoint_path"], result["config"]["model"])


def pair_plan(runs: Runs, flat: str, sharp: str) -> tuple[list[tuple[int, int]], list[dict]]:
    """Which (flat, sharp) pairs to compare along their connecting line (Fig. 7, claim 7):
    only pairs of two minima (Lemma 2 speaks about minima; `minimum_runs`). Returns the index
    pairs into the minimum runs of each method, and every other pair with the reason it was
    skipped."""
    conv = {m: minimum_runs(runs[m]) for m in (flat, sharp)}
    compared = [(i, j) for i in range(len(conv[flat])) for j in range(len(conv[sharp]))]
    skipped = []
    for run_f in runs[flat]:
        for run_s in runs[sharp]:
            if run_f["status"] in MEASURED_STATUSES and run_s["status"] in MEASURED_STATUSES:
                continue
            why = [
                f"{m} seed {r['config']['seed']}: {r['status']} ({r.get('reason') or 'n/a'})"
                for m, r in ((flat, run_f), (sharp, run_s))
                if r["status"] not in MEASURED_STATUSES
            ]
            skipped.append(
                {
                    f"{flat}_seed": run_f["config"]["seed"],
                    f"{sharp}_seed": run_s["config"]["seed"],
                    "reason": "; ".join(why),
                }
            )
    return compared, skipped


def pair_curvatures(ends: dict, data: TensorData, chunk: int | None) -> dict:
    """One pair of minima {method: (result, model, theta)}, the first the one whose flatness
    is in question: the curvature along the unit line direction at each end
    (`curvature_along`), beside each end's lambda_max (Lemma 2)."""
    (a, (run_a, model_a, theta_a)), (b, (run_b, model_b, theta_b)) = ends.items()
    alpha = (theta_b - theta_a) / (theta_b - theta_a).norm()
    x, y = data.train_inputs, data.train_targets
    curv_a = curvature_along(model_a, F.mse_loss, x, y, alpha, chunk)
    curv_b = curvature_along(model_b, F.mse_loss, x, y, alpha, chunk)
    return {
        f"{a}_seed": run_a["config"]["seed"],
        f"{b}_seed": run_b["config"]["seed"],
        f"{a}_status": run_a["status"],
        f"{b}_status": run_b["status"],
        "distance": float((theta_b - theta_a).norm()),
        f"line_curvature_{a}": curv_a,
        f"line_curvature_{b}": curv_b,
        f"lambda_max_{a}": run_a["analysis"].get("lambda_max"),
        f"lambda_max_{b}": run_b["analysis"].get("lambda_max"),
        "flat_looks_sharper_on_line": curv_a > curv_b,
    }


def cross_sections(
    runs: Runs, settings: Mapping[str, Any], data: TensorData, flat: str, sharp: str
) -> tuple[dict, list[dict]]:
    """Fig. 7 data: the interpolation line between each (flat, sharp) pair of minima, close-ups
    of the first pair around each end, and each method's first minimum along its sharpest
    direction; and every pair's curvatures (`pair_curvatures`). Only minima take part
    (`minimum_runs`, as `pair_plan`); the caller checks each method has one."""
    runs = {m: minimum_runs(runs[m]) for m in (flat, sharp)}
    x, y = data.train_inputs, data.train_targets
    chunk = settings.get("chunk_size")
    models = {m: [_model(r) for r in runs[m]] for m in (flat, sharp)}
    thetas = {m: [flat_parameters(model) for model in models[m]] for m in models}
    line_ts = np.linspace(*settings["line_range"], settings["line_points"])
    half = settings["closeup_halfwidth"]
    closeup_ts = np.linspace(-half, half, settings["closeup_points"])

    pairs, line_losses = [], []
    for i, (model_f, theta_f) in enumerate(zip(models[flat], thetas[flat])):
        for j, (model_s, theta_s) in enumerate(zip(models[sharp], thetas[sharp])):
            line_losses.append(
                loss_along_line(model_f, F.mse_loss, x, y, theta_f, theta_s, line_ts, chunk)
            )
            ends = {
                flat: (runs[flat][i], model_f, theta_f),
                sharp: (runs[sharp][j], model_s, theta_s),
            }
            pairs.append(pair_curvatures(ends, data, chunk))
    # Close-ups of the first pair around each end (Fig. 7 b, c), in units of the line parameter t.
    first_line = (models[flat][0], F.mse_loss, x, y, thetas[flat][0], thetas[sharp][0])
    closeup = {
        flat: loss_along_line(*first_line, closeup_ts, chunk),
        sharp: loss_along_line(*first_line, 1 + closeup_ts, chunk),
    }
    # Sharpest direction of each minimum (Fig. 7 d, e).
    radius = settings["eigen_radius"]
    eig_ts = np.linspace(-radius, radius, settings["eigen_points"])
    eig = {}
    for method in (flat, sharp):
        result = runs[method][0]
        eig[method] = loss_along_direction(
            models[method][0],
            F.mse_loss,
            x,
            y,
            None,
            load_eigenvector(result["analysis"]["eigenvector_path"]),
            eig_ts,
            chunk,
            # the eigenvector and the weights are the final ones: their eigenvalue is the raw one
            eigenvalue=result["analysis"].get("lambda_max_raw") or result["analysis"]["lambda_max"],
        )
    arrays = {
        "line_ts": line_ts,
        "line_losses": np.stack(line_losses),
        "closeup_ts": closeup_ts,
        f"closeup_{flat}": closeup[flat],
        f"closeup_{sharp}": closeup[sharp],
        "eigen_ts": eig_ts,
        **{f"eigen_loss_{m}": eig[m]["loss"] for m in eig},
        **{f"eigen_quadratic_{m}": eig[m]["quadratic"] for m in eig},
        "methods": np.array([flat, sharp]),
    }
    return arrays, pairs


def other_methods(
    runs: Runs, settings: Mapping[str, Any], data: TensorData, others: Sequence[str], sharp: str
) -> tuple[dict, list[dict], dict]:
    """Fig. 7 for each further method (e.g. SAM) against the sharp one: its cross-section
    arrays (keys prefixed `<method>:`), its pairs (with a `method` column: the first end) and,
    per method, the pairs skipped because a run is not a minimum."""
    arrays, pairs, skipped = {}, [], {}
    for method in others:
        compared, skipped[method] = pair_plan(runs, method, sharp)
        if not compared:
            arrays[f"{method}:unavailable"] = np.array(True)
            continue
        section, method_pairs = cross_sections(runs, settings, data, method, sharp)
        arrays.update({f"{method}:{key}": value for key, value in section.items()})
        pairs += [{"method": method, **pair} for pair in method_pairs]
    return arrays, pairs, skipped


def method_density(result: Mapping[str, Any], data: TensorData, density_cfg: Mapping) -> dict:
    """The eigenvalue density of one run's minimum: the one its analysis saved
    (analysis.density.enabled), else computed here with the same settings (the cpu profile
    measures one minimum per method, not every run: 120 HVPs each)."""
    if result["analysis"].get("density_path"):
        return read_json(result["analysis"]["density_path"])
    density = hessian_spectral_density(
        _model(result),
        F.mse_loss,
        data.train_inputs,
        data.train_targets,
        seed=_seed(result),
        **density_settings(density_cfg),
    )
    return density.to_dict(arrays=True)


def spectrum_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the analysis measured beyond lambda_max at one run's final weights: the top two
    eigenvalues and their gap ratio, the trace (Hutchinson) and, where measured, the
    density's moments, each with its cost in HVPs."""
    analysis = result.get("analysis") or {}
    eigenvalues = analysis.get("eigenvalues") or []
    trace = analysis.get("trace") or {}
    density = analysis.get("density") or {}
    return {
        "seed": _seed(result),
        "status": result["status"],
        "reason": result.get("reason"),
        "lambda_1": finite_or_none(eigenvalues[0]) if eigenvalues else None,
        "lambda_2": finite_or_none(eigenvalues[1]) if len(eigenvalues) > 1 else None,
        "gap_ratio": finite_or_none(analysis.get("lambda_gap_ratio")),
        "lambda_hvps": analysis.get("hessian_hvps"),
        "trace": finite_or_none(trace.get("trace")),
        "trace_stderr": finite_or_none(trace.get("stderr")),
        "trace_probes": trace.get("probes"),
        "trace_hvps": trace.get("hvps"),
        "trace_converged": trace.get("converged"),
        "density_moments": density.get("moments"),
        "density_top_edge": finite_or_none(density.get("top_edge")),
        "density_hvps": density.get("hvps"),
        "parameters": density.get("num_parameters"),
    }


def spectra(runs: Runs, data: TensorData, density_cfg: Mapping) -> dict:
    """`spectrum_row` of every run, and per method the density of its first converged run
    (the one whose analysis measured it, else the first: `method_density`)."""
    out: dict = {"runs": {}, "densities": {}}
    for method, results in runs.items():
        rows = [spectrum_row(result) for result in results]
        out["runs"][method] = rows
        measured = minimum_runs(results)
        first = next(
            (r for r in measured if r["analysis"].get("density_path")),
            measured[0] if measured else None,
        )
        if first is not None:
            saved = method_density(first, data, density_cfg)
            out["densities"][method] = {
                "seed": _seed(first),
                "grid": saved["grid"],
                "density": saved["density"],
                "lambda_max": finite_or_none(first["analysis"].get("lambda_max")),
                "sigma": saved["sigma"],
                "hvps": saved["hvps"],
                "moments": saved["moments"],
            }
            for row in rows:  # the same net for every run of a method: tr(H)/N needs N
                row["parameters"] = row["parameters"] or saved["num_parameters"]
    return out


def gains_by_radius(runs: Runs, settings: Mapping[str, Any], data: TensorData) -> dict:
    """The gain comparison of Fig. 6 at several input radii (issue 11 item 5).

    The main gain search (analysis callback) runs on the sphere ||x|| = mean training-input
    norm; with biases the gain depends on that choice. Here each converged run's search is
    repeated at `gain_radii` x that norm (cheaper: `gain_radius_restarts` restarts and
    `gain_radius_steps` steps), and the radius-free training-input gains are added beside.
    Runs that are not minima are listed, not measured."""
    inputs = data.train_inputs
    mean_norm = float(inputs.norm(dim=1).mean())
    factors = [float(f) for f in settings.get("gain_radii", DEFAULT_GAIN_RADII)]
    restarts = int(settings.get("gain_radius_restarts", DEFAULT_GAIN_RADIUS_RESTARTS))
    steps = int(settings.get("gain_radius_steps", DEFAULT_GAIN_RADIUS_STEPS))
    out: dict = {
        "mean_input_norm": mean_norm,
        "radius_factors": factors,
        "restarts": restarts,
        "steps": steps,
        "runs": {},
        "skipped": [],
    }
    for method, results in runs.items():
        out["runs"][method] = []
        for result in results:
            seed = _seed(result)
            if result["status"] not in MEASURED_STATUSES:
                out["skipped"].append(
                    {
                        "method": method,
                        "seed": seed,
                        "status": result["status"],
                        "reason": result.get("reason"),
                    }
                )
                continue
            model = _model(result)
            profiles = gains_at_input_norms(
                model,
                input_dim=inputs.shape[1],
                input_norms=[factor * mean_norm for factor in factors],
                restarts=restarts,
                steps=steps,
                seed=seed,
            )
            out["runs"][method].append(
                {
                    "seed": seed,
                    "status": result["status"],
                    "by_radius": [
                        {"factor": factor, **profile} for factor, profile in zip(factors, profiles)
                    ],
                    "training_inputs": training_input_gains(model, inputs),
                }
            )
    return out


def gain_profiles(runs: Runs) -> dict[str, list[dict]]:
    """Fig. 6: per method, each run's gain profile from its analysis, with its status."""
    return {
        method: [
            {
                "seed": r["config"]["seed"],
                "status": r["status"],
                "reason": r.get("reason"),
                **r["analysis"]["gains"],
            }
            for r in results
            if "gains" in (r.get("analysis") or {})
        ]
        for method, results in runs.items()
    }


def write_outputs(
    out: Path, runs: Runs, settings: Mapping[str, Any], data: TensorData, density_cfg: Mapping
) -> None:
    """Table S1, the gain profiles, the measurements on the minima and the stage's summary,
    under `out` (results/flat_vs_sharp/; the files are listed in the stage's docstring). The first
    method of `runs` is the flat one, the second the sharp one, any further one is set beside
    the sharp one."""
    flat, sharp, *others = list(runs)
    table = table_s1(runs)
    write_json(out / "table_s1.json", table)
    write_json(out / "gains.json", gain_profiles(runs))
    write_json(out / "gains_by_radius.json", gains_by_radius(runs, settings, data))
    compared, skipped = pair_plan(runs, flat, sharp)
    summary: dict[str, Any] = {
        "table_s1": table_s1_means(table),
        "converged": {m: row["converged"] for m, row in table.items()},
        "pairs_skipped": skipped,
    }
    if compared:
        arrays, pairs = cross_sections(runs, settings, data, flat, sharp)
        np.savez_compressed(out / "cross_sections.npz", **arrays)
        write_csv(out / "pairs.csv", pairs)
        summary["pairs"] = len(pairs)
        summary["pairs_flat_looks_sharper"] = int(
            sum(p["flat_looks_sharper_on_line"] for p in pairs)
        )
    else:
        # Keep the fixed outputs present; the report states that the comparison could not be
        # made (a method without a converged run) and lists the skipped pairs.
        np.savez_compressed(out / "cross_sections.npz", unavailable=np.array(True))
        write_csv(out / "pairs.csv", [], ["unavailable"])
        summary["pairs"] = 0
    arrays, other_pairs, other_skipped = other_methods(runs, settings, data, others, sharp)
    np.savez_compressed(out / "cross_sections_others.npz", **arrays)
    columns = list(dict.fromkeys(k for p in other_pairs for k in p)) or ["unavailable"]
    write_csv(out / "pairs_others.csv", other_pairs, columns)
    summary["others"] = {
        method: {
            "pairs": sum(p["method"] == method for p in other_pairs),
            "pairs_looks_sharper": sum(
                bool(p["flat_looks_sharper_on_line"]) for p in other_pairs if p["method"] == method
            ),
            "pairs_skipped": other_skipped[method],
        }
        for method in others
    }
    write_json(out / "spectra.json", spectra(runs, data, density_cfg))
    write_json(out / "summary.json", summary)
