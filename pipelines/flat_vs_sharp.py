"""DVC stage `flat_vs_sharp` (Table S1, Figs 6-7): SGD (flat) vs Adam (sharp) minima.

    python -m pipelines.flat_vs_sharp [--params params.yaml] [--root .]

Trains each method over the seeds (sharpness and gain profiles measured by the analysis
callback), then measures on the saved weights the loss along the line between every (SGD, Adam)
pair and along each minimum's top Hessian eigenvector. Writes under results/flat_vs_sharp/:
  runs/<key>.json        one result per training run
  table_s1.json          mean and std over seeds per method, beside the paper's numbers
  gains.json             per-run gain profiles (Fig. 6)
  cross_sections.npz     line, close-up and eigenvector cross-sections (Fig. 7)
  pairs.csv              per pair: curvature along the line at each end vs each lambda_max
  summary.json           the numbers the report checks (dvc metrics)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.common import (
    batching_settings,
    load_params,
    profile_settings,
    stage_main,
    training_overrides,
)
from src.analysis.cross_sections import loss_along_direction, loss_along_line
from src.analysis.hessian import hessian_vector_product
from src.analysis.landscape import flat_parameters
from src.data import load_dataset
from src.experiments.grid import compose_config, run_grid
from src.experiments.store import prune_results
from src.models import MLP
from src.paper.tables import write_csv, write_json

STAGE = "flat_vs_sharp"
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
    out = root / "results" / STAGE
    base = [*training_overrides(params, STAGE, settings), f"depth={settings['depth']}"]
    runs: dict[str, list[dict]] = {}
    for method, overrides in settings["methods"].items():
        runs[method] = run_grid(
            [*base, *overrides],
            {"seed": settings["seeds"]},
            results_dir=out / "runs",
            output_root=root / "outputs" / "pipeline" / STAGE,
            require_files=("checkpoint_path", "analysis.eigenvector_path"),
            **batching_settings(params),
        )
    prune_results(out / "runs", [r["key"] for results in runs.values() for r in results])
    return runs


def table_s1(runs: dict[str, list[dict]]) -> dict:
    table = {}
    for method, results in runs.items():
        row = {"seeds": len(results), "statuses": [r["status"] for r in results]}
        for field in ("final_train_loss", "final_val_loss", "lambda_max"):
            values = [
                (r.get("analysis") or {}).get("lambda_max") if field == "lambda_max" else r[field]
                for r in results
            ]
            values = np.array([v for v in values if v is not None], dtype=float)
            row[field] = {
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                "values": values.tolist(),
            }
            if method in PAPER_TABLE_S1:
                mean, std = PAPER_TABLE_S1[method][field]
                row[field]["paper"] = {"mean": mean, "std": std}
        table[method] = row
    return table


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
    alpha the unit line direction (exact, one Hessian-vector product), next to its lambda_max."""
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
            alpha = (theta_s - theta_f) / (theta_s - theta_f).norm()
            curv_f = float(alpha @ hessian_vector_product(model_f, F.mse_loss, x, y, alpha, chunk))
            curv_s = float(alpha @ hessian_vector_product(model_s, F.mse_loss, x, y, alpha, chunk))
            pairs.append(
                {
                    f"{flat}_seed": runs[flat][i]["config"]["seed"],
                    f"{sharp}_seed": runs[sharp][j]["config"]["seed"],
                    "distance": float((theta_s - theta_f).norm()),
                    f"line_curvature_{flat}": curv_f,
                    f"line_curvature_{sharp}": curv_s,
                    f"lambda_max_{flat}": runs[flat][i]["analysis"].get("lambda_max"),
                    f"lambda_max_{sharp}": runs[sharp][j]["analysis"].get("lambda_max"),
                    "flat_looks_sharper_on_line": curv_f > curv_s,
                }
            )
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


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, STAGE)
    root = Path(root)
    out = root / "results" / STAGE
    flat, sharp = list(settings["methods"])  # e.g. sgd, adam
    runs = train_methods(params, settings, root)
    table = table_s1(runs)
    write_json(out / "table_s1.json", table)
    write_json(
        out / "gains.json",
        {
            m: [
                {"seed": r["config"]["seed"], **r["analysis"]["gains"]}
                for r in runs[m]
                if "gains" in r.get("analysis", {})
            ]
            for m in runs
        },
    )
    ok = all(
        r["status"] != "diverged" and r.get("analysis", {}).get("lambda_max")
        for rs in runs.values()
        for r in rs
    )
    summary = {
        "table_s1": {
            m: {k: v["mean"] for k, v in row.items() if isinstance(v, dict)}
            for m, row in table.items()
        }
    }
    if ok:
        cfg = compose_config(training_overrides(params, STAGE, settings))
        data = load_dataset(cfg.dataset)
        arrays, pairs = cross_sections(runs, settings, data, flat, sharp)
        np.savez_compressed(out / "cross_sections.npz", **arrays)
        write_csv(out / "pairs.csv", pairs)
        summary["pairs"] = len(pairs)
        summary["pairs_flat_looks_sharper"] = int(
            sum(p["flat_looks_sharper_on_line"] for p in pairs)
        )
    else:
        # Keep the fixed outputs present; the report states that the comparison could not be made.
        np.savez_compressed(out / "cross_sections.npz", unavailable=np.array(True))
        write_csv(out / "pairs.csv", [], ["unavailable"])
        summary["pairs"] = 0
    write_json(out / "summary.json", summary)


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
