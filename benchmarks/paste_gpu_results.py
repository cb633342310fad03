"""Paste the tables of a `benchmarks/gpu_suite.sh` run into BENCHMARKS.md (not a test).

    python benchmarks/paste_gpu_results.py RESULTS_DIR [--benchmarks BENCHMARKS.md]

RESULTS_DIR is the folder the suite wrote ($OUT): gpu.txt, cuda_tests.xml, summary.txt and
the Markdown tables train_throughput.md and hessian.md. The section between the markers
`<!-- gpu-suite:start -->` and `<!-- gpu-suite:end -->` is replaced (appended if absent), so
pasting a rerun replaces the previous figures instead of adding to them.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

START, END = "<!-- gpu-suite:start -->", "<!-- gpu-suite:end -->"


def test_lines(junit: Path) -> list[str]:
    """One line of counts and one per test that did not pass, from pytest's JUnit XML."""
    if not junit.is_file():
        return ["CUDA tests: no result file (the step did not run or was cut off)."]
    cases = ET.parse(junit).getroot().iter("testcase")
    passed, skipped, failed = [], [], []
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is not None:
            skipped.append(name)
        else:
            passed.append(name)
    lines = [f"CUDA tests: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped."]
    lines += [f"- failed: `{name}`" for name in failed]
    return lines


def section(results: Path) -> str:
    gpu = (
        (results / "gpu.txt").read_text().strip().splitlines()
        if (results / "gpu.txt").is_file()
        else []
    )
    parts = [
        START,
        f"## GPU suite, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {'; '.join(gpu) or 'unknown'}.",
        "",
        *test_lines(results / "cuda_tests.xml"),
        "",
    ]
    for name, title in (
        ("train_throughput", "Training throughput"),
        ("hessian", "Sharpness"),
        ("hessian_spectrum", "Trace and spectral density"),
    ):
        table = results / f"{name}.md"
        parts += [f"### {title}", "", table.read_text().strip() if table.is_file() else
                  "(no table: see the step's log)", ""]  # fmt: skip
    if (results / "summary.txt").is_file():
        parts += [
            "Steps: " + "; ".join((results / "summary.txt").read_text().split("\n")).strip("; "),
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def paste(document: str, new: str) -> str:
    if START in document and END in document:
        before, rest = document.split(START, 1)
        return before + new + rest.split(END, 1)[1]
    return document.rstrip("\n") + "\n\n" + new + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results}: no such folder", file=sys.stderr)
        return 1
    args.benchmarks.write_text(paste(args.benchmarks.read_text(), section(args.results)))
    print(f"pasted {args.results} into {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
