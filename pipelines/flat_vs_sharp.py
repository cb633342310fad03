"""DVC stage `flat_vs_sharp` (Table S1, Figs 6-7): SGD (flat) vs Adam (sharp) minima, and beyond
the paper the minima of further methods (SAM) measured beside them.

    python -m pipelines.flat_vs_sharp [--params params.yaml] [--root .]

Trains each method over the seeds (sharpness and gain profiles measured by the analysis
callback), then measures on the saved weights the loss along the line between every (SGD, Adam)
pair and along each minimum's top Hessian eigenvector. Only runs that reached a minimum
(status `converged`) enter Table S1's statistics and the pairs; the others are listed with
their status and reason, never dropped. Writes under results/flat_vs_sharp/:
  runs/<key>.json        one result per training run
  table_s1.json          per method: mean and std over converged runs, their per-seed values,
                         the count of converged runs and the statuses of the others, beside the
                         paper's numbers
  gains.json             per-run gain profiles (Fig. 6), each with its run's status
  gains_by_radius.json   per converged run: the gain search at several input radii, and the
                         radius-free gains at the training inputs themselves
  cross_sections.npz     line, close-up and eigenvector cross-sections (Fig. 7)
  pairs.csv              per (converged, converged) pair: curvature along the line at each end
                         vs each lambda_max
  summary.json           the numbers the report checks (dvc metrics), and the pairs skipped
                         because a run of the pair is not a minimum
  cross_sections_others.npz, pairs_others.csv
                         the same Fig. 7 cross-sections and pair curvatures for every further
                         method (params.yaml's methods after the first two, e.g. SAM) against
                         the sharp one; npz keys are prefixed `<method>:`
  spectra.json           per run: lambda_1, lambda_2 and their gap ratio, the Hessian trace
                         (Hutchinson, with its standard error) and (where the analysis measured
                         it) the density's moments, with each measure's cost in HVPs; per
                         method the eigenvalue density of its first converged run (the density
                         figure; measured here when the analysis did not)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pipelines.common import (
    grid_settings,
    load_params,
    profile_settings,
    stage_main,
    training_overrides,
)
from src.analysis.cross_sections import loss_along_direction, loss_along_line
from src.analysis.gains import gain_profile
from src.analysis.hessian import hessian_vector_product
from src.analysis.landscape import flat_parameters
from src.analysis.spectrum import hessian_spectral_density
from src.data import load_dataset
from src.experiments.grid import compose_config, run_points
from src.experiments.store import prune_results
from src.models import MLP
from src.paper.tables import (
    CONVERGED,
    dead_fraction_max,
    finite_or_none,
    load_json,
    write_csv,
    write_json,
)
from src.training.callbacks import density_settings

STAGE = "flat_vs_sharp"
REQUIRED_FILES = ("checkpoint_path", "analysis.eigenvector_path", "analysis.density_path")
TABLE_FIELDS = ("final_train_loss", "final_val_loss", "lambda_max")
# Gain search at several radii (issue 11 item 5): factors of the mean training-input norm, with
# a cheaper search than the main one (defaults when params.yaml leaves them out).
DEFAULT_GAIN_RADII = (0.5, 1.0, 2.0)
DEFAULT_GAIN_RADIUS_RESTARTS = 20
DEFAULT_GAIN_RADIUS_STEPS = 100
# Table S1 of the paper (6 layers, full MNIST): mean, std over 4 seeds.
PAPER_TABLE_S1 = {
    "sgd": {
        "final_train_loss": (2.69e-2, 2.53e-5),
        "final_val_loss": (2.70e-2, 1.68e-4),
        "lambda_max": (1.76, 9.43e-3),
    },
    "adam": {
        "final_train_loss": (2.74e-2, 4.03e-5),
        "final_val_loss": (2.80e-2, 1.94e-4),
        "lambda_max": (12.9, 2.2),
    },
}


def train_methods(params: dict, settings: dict, root: Path) -> dict[str, list[dict]]:
    """Every (method, seed) run, all in one call: the methods' runs train side by side (one
    batched model per method and worker), not one method after the other."""
    out = root / "results" / STAGE
    base = [*training_overrides(params, STAGE, settings), f"depth={settings['depth']}"]
    methods = settings["methods"]
    # The density of one minimum per method (the figure's): the first seed's analysis measures
    # it, in the worker, batched with the others (`method_density` falls back to measuring it
    # here when that run is not a minimum).
    first = settings["seeds"][0]
    density = ["analysis.density.enabled=true"]
    jobs = [
        [*overrides, f"seed={seed}", *(density if seed == first else [])]
        for overrides in methods.values()
        for seed in settings["seeds"]
    ]
    results = run_points(
        base,
        jobs,
        results_dir=out / "runs",
        output_root=root / "outputs" / "pipeline" / STAGE,
        require_files=REQUIRED_FILES,
        **grid_settings(params),
    )
    n = len(settings["seeds"])
    runs = {method: results[i * n : (i + 1) * n] for i, method in enumerate(methods)}
    prune_results(out / "runs", [r["key"] for r in results])
    return runs


def run_entry(result: dict) -> dict:
    """What Table S1 needs of one run: its numbers and why it is (not) a minimum."""
    analysis = result.get("analysis") or {}
    return {
        "seed": int(result["config"]["seed"]),
        "status": result["status"],
        "reason": result.get("reason"),
        "epochs": result.get("epochs"),
        "final_train_loss": finite_or_none(result.get("final_train_loss")),
        "final_val_loss": finite_or_none(result.get("final_val_loss")),
        "lambda_max": finite_or_none(analysis.get("lambda_max")),
        "affine_baseline_loss": finite_or_none(result.get("affine_baseline_loss")),
        "loss_vs_affine": finite_or_none(result.get("loss_vs_affine")),
        "dead_fraction_max": dead_fraction_max(result.get("dead_units")),
        "key": result.get("key"),
    }


def mean_std(values: list[float]) -> dict:
    """Mean and sample std (ddof 1, as the paper's "mean ± std" over 4 seeds)."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()) if len(array) else None,
        "std": float(array.std(ddof=1)) if len(array) > 1 else None,
    }


def table_s1(runs: dict[str, list[dict]]) -> dict:
    """Table S1 from converged runs only (issue 11 item 4): per method the mean ± std over the
    runs that reached a minimum, their per-seed values, and every other run listed with its
    status and reason (a plateau or an unstable run is not a minimum, so its lambda_max says
    nothing about the minima the paper compares). The paper's numbers sit beside ours."""
    table = {}
    for method, results in runs.items():
        entries = [run_entry(r) for r in results]
        used = [e for e in entries if e["status"] == CONVERGED]
        row = {
            "seeds": len(entries),
            "converged": len(used),
            "converged_seeds": [e["seed"] for e in used],
            "statuses": [e["status"] for e in entries],
            "not_converged": [
                {"seed": e["seed"], "status": e["status"], "reason": e["reason"]}
                for e in entries
                if e["status"] != CONVERGED
            ],
            "runs": entries,
        }
        for field in TABLE_FIELDS:
            pairs = [(e["seed"], e[field]) for e in used if e[field] is not None]
            row[field] = {
                **mean_std([v for _, v in pairs]),
                "values": [v for _, v in pairs],
                "seeds": [seed for seed, _ in pairs],
            }
            if method in PAPER_TABLE_S1:
                mean, std = PAPER_TABLE_S1[method][field]
                row[field]["paper"] = {"mean": mean, "std": std}
        table[method] = row
    return table


def converged_runs(results: list[dict]) -> list[dict]:
    return [r for r in results if r["status"] == CONVERGED]


def pair_plan(
    runs: dict[str, list[dict]], flat: str, sharp: str
) -> tuple[list[tuple[int, int]], list[dict]]:
    """Which (flat, sharp) pairs to compare along their connecting line (Fig. 7, claim 7):
    only pairs of two minima (Lemma 2 speaks about minima). Returns the index pairs into the
    converged runs of each method, and every other pair with the reason it was skipped."""
    conv = {m: converged_runs(runs[m]) for m in (flat, sharp)}
    compared = [(i, j) for i in range(len(conv[flat])) for j in range(len(conv[sharp]))]
    skipped = []
    for run_f in runs[flat]:
        for run_s in runs[sharp]:
            if run_f["status"] == CONVERGED and run_s["status"] == CONVERGED:
                continue
            why = [
                f"{m} seed {r['config']['seed']}: {r['status']} ({r.get('reason') or 'n/a'})"
                for m, r in ((flat, run_f), (sharp, run_s))
                if r["status"] != CONVERGED
            ]
            skipped.append(
                {
                    f"{flat}_seed": run_f["config"]["seed"],
                    f"{sharp}_seed": run_s["config"]["seed"],
                    "reason": "; ".join(why),
                }
            )
    return compared, skipped


def load_model(result: dict) -> MLP:
    saved = torch.load(result["checkpoint_path"], map_location="cpu", weights_only=False)
    state = saved["state_dict"]
    weights = [state[k] for k in sorted(state) if k.endswith("weight")]
    m = result["config"]["model"]
    model = MLP(
        weights[0].shape[1],
        weights[-1].shape[0],
        m["depth"],
        weights[0].shape[0],
        m["activation"],
        m["bias"],
    )
    model.load_state_dict(state)
    return model


def cross_sections(
    runs: dict[str, list[dict]], settings: dict, data, flat: str, sharp: str
) -> tuple[dict, list[dict]]:
    """Fig. 7 data: the interpolation line between each (flat, sharp) pair, and each minimum's
    sharpest direction. Along the line, the curvature each end shows is alpha^T H alpha with
    alpha the unit line direction (exact, one Hessian-vector product), next to its lambda_max.
    Only converged runs take part (`pair_plan`); the caller checks each method has one."""
    runs = {m: converged_runs(runs[m]) for m in (flat, sharp)}
    x, y = data.train_inputs, data.train_targets
    chunk = settings.get("chunk_size")
    models = {m: [load_model(r) for r in runs[m]] for m in (flat, sharp)}
    thetas = {m: [flat_parameters(model) for model in models[m]] for m in models}
    line_ts = np.linspace(*settings["line_range"], settings["line_points"])
    closeup_ts = np.linspace(
        -settings["closeup_halfwidth"], settings["closeup_halfwidth"], settings["closeup_points"]
    )

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
            pairs.append(pair_curvatures(ends, x, y, chunk))
    # Close-ups of the first pair around each end (Fig. 7 b, c), in units of the line parameter t.
    closeup = {
        flat: loss_along_line(
            models[flat][0], F.mse_loss, x, y, thetas[flat][0], thetas[sharp][0], closeup_ts, chunk
        ),
        sharp: loss_along_line(
            models[flat][0],
            F.mse_loss,
            x,
            y,
            thetas[flat][0],
            thetas[sharp][0],
            1 + closeup_ts,
            chunk,
        ),
    }
    # Sharpest direction of each minimum (Fig. 7 d, e).
    eig_ts = np.linspace(
        -settings["eigen_radius"], settings["eigen_radius"], settings["eigen_points"]
    )
    eig = {}
    for method in (flat, sharp):
        result = runs[method][0]
        vector = torch.load(result["analysis"]["eigenvector_path"], weights_only=False)[
            "eigenvector"
        ]
        section = loss_along_direction(
            models[method][0],
            F.mse_loss,
            x,
            y,
            None,
            vector,
            eig_ts,
            chunk,
            eigenvalue=result["analysis"]["lambda_max"],
        )
        eig[method] = section
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


def pair_curvatures(ends: dict, x: torch.Tensor, y: torch.Tensor, chunk) -> dict:
    """One pair of minima {method: (result, model, theta)}, the first the one whose flatness
    is in question: the curvature alpha^T H alpha along the unit line direction alpha at each
    end (exact, one Hessian-vector product each), beside each end's lambda_max (Lemma 2)."""
    (a, (run_a, model_a, theta_a)), (b, (run_b, model_b, theta_b)) = ends.items()
    alpha = (theta_b - theta_a) / (theta_b - theta_a).norm()
    curv_a = float(alpha @ hessian_vector_product(model_a, F.mse_loss, x, y, alpha, chunk))
    curv_b = float(alpha @ hessian_vector_product(model_b, F.mse_loss, x, y, alpha, chunk))
    return {
        f"{a}_seed": run_a["config"]["seed"],
        f"{b}_seed": run_b["config"]["seed"],
        "distance": float((theta_b - theta_a).norm()),
        f"line_curvature_{a}": curv_a,
        f"line_curvature_{b}": curv_b,
        f"lambda_max_{a}": run_a["analysis"].get("lambda_max"),
        f"lambda_max_{b}": run_b["analysis"].get("lambda_max"),
        "flat_looks_sharper_on_line": curv_a > curv_b,
    }


def other_methods(
    runs: dict[str, list[dict]], settings: dict, data, others: list[str], sharp: str
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


def method_density(result: dict, data, density_cfg: dict) -> dict:
    """The eigenvalue density of one run's minimum: the one its analysis saved
    (analysis.density.enabled), else computed here with the same settings (the cpu profile
    measures one minimum per method, not every run: 120 HVPs each)."""
    if result["analysis"].get("density_path"):
        return load_json(Path(result["analysis"]["density_path"]))
    density = hessian_spectral_density(
        load_model(result),
        F.mse_loss,
        data.train_inputs,
        data.train_targets,
        seed=int(result["config"]["seed"]),
        **density_settings(density_cfg),
    )
    return density.to_dict(arrays=True)


def spectra(runs: dict[str, list[dict]], data, density_cfg: dict) -> dict:
    """What the analysis measured beyond lambda_max at each run's final weights: the top two
    eigenvalues and their gap ratio, the trace (Hutchinson) and, where measured, the density's
    moments, each with its cost in HVPs; and per method the density of its first converged
    run (`method_density`)."""
    out: dict = {"runs": {}, "densities": {}}
    for method, results in runs.items():
        rows = []
        for result in results:
            analysis = result.get("analysis") or {}
            eigenvalues = analysis.get("eigenvalues") or []
            trace = analysis.get("trace") or {}
            density = analysis.get("density") or {}
            rows.append(
                {
                    "seed": int(result["config"]["seed"]),
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
            )
        out["runs"][method] = rows
        first = next(
            (r for r in results if r["status"] == CONVERGED and r["analysis"].get("density_path")),
            next((r for r in results if r["status"] == CONVERGED), None),
        )
        if first is not None:
            saved = method_density(first, data, density_cfg)
            out["densities"][method] = {
                "seed": int(first["config"]["seed"]),
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


def training_input_gains(model: MLP, inputs: torch.Tensor, chunk: int = 4096) -> dict:
    """Radius-free gains: per layer k, the largest and the median ||h_k(x)|| / ||x|| over the
    training inputs themselves. The gain search of Fig. 6 maximizes over a sphere whose radius
    we chose (biased nets have no scale-free gain); this one needs no radius, and shows how
    the nets amplify the signals they were trained on."""
    ratios = []
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            x = inputs[start : start + chunk]
            norms = x.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
            outs = model.layer_outputs(x)
            ratios.append(torch.stack([h.flatten(1).norm(dim=1) / norms for h in outs]))
    per_layer = torch.cat(ratios, dim=1).double()
    return {
        "max_gain": per_layer.amax(dim=1).tolist(),
        "median_gain": per_layer.median(dim=1).values.tolist(),
    }


def gains_by_radius(runs: dict[str, list[dict]], settings: dict, data) -> dict:
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
            seed = int(result["config"]["seed"])
            if result["status"] != CONVERGED:
                out["skipped"].append(
                    {
                        "method": method,
                        "seed": seed,
                        "status": result["status"],
                        "reason": result.get("reason"),
                    }
                )
                continue
            model = load_model(result)
            by_radius = []
            for factor in factors:
                profile = gain_profile(
                    model,
                    input_dim=inputs.shape[1],
                    restarts=restarts,
                    steps=steps,
                    input_norm=factor * mean_norm,
                    seed=seed,
                )
                by_radius.append(
                    {
                        "factor": factor,
                        "input_norm": factor * mean_norm,
                        "max_gain": list(profile.max_gain),
                        "maximal_input_gains": list(profile.maximal_input_gains),
                    }
                )
            out["runs"][method].append(
                {
                    "seed": seed,
                    "status": result["status"],
                    "by_radius": by_radius,
                    "training_inputs": training_input_gains(model, inputs),
                }
            )
    return out


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, STAGE)
    root = Path(root)
    out = root / "results" / STAGE
    flat, sharp, *others = list(settings["methods"])  # e.g. sgd, adam, sam
    runs = train_methods(params, settings, root)
    table = table_s1(runs)
    write_json(out / "table_s1.json", table)
    write_json(
        out / "gains.json",
        {
            m: [
                {
                    "seed": r["config"]["seed"],
                    "status": r["status"],
                    "reason": r.get("reason"),
                    **r["analysis"]["gains"],
                }
                for r in runs[m]
                if "gains" in (r.get("analysis") or {})
            ]
            for m in runs
        },
    )
    cfg = compose_config(training_overrides(params, STAGE, settings))
    data = load_dataset(cfg.dataset)
    write_json(out / "gains_by_radius.json", gains_by_radius(runs, settings, data))
    compared, skipped = pair_plan(runs, flat, sharp)
    summary = {
        "table_s1": {
            m: {k: v["mean"] for k, v in row.items() if k in TABLE_FIELDS}
            for m, row in table.items()
        },
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
    density_cfg = OmegaConf.to_container(cfg.analysis.density, resolve=True)
    write_json(out / "spectra.json", spectra(runs, data, density_cfg))
    write_json(out / "summary.json", summary)


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
