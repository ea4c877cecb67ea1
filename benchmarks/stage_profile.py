"""Wall time and peak memory of each stage of the default `mptune run`.

Each stage runs as its own `python -m mptune.cli STAGE` process on one run directory (teach, then
distill, then adapt: together exactly what `mptune run` does), so the peak resident set size of a
stage is that process's own `ru_maxrss` (from `os.wait4`, per child: a process's peak RSS only
ever grows, so stages sharing one process could not be told apart). A first process that only
imports mptune and loads the model ("load") gives the fixed cost every stage process pays.

Reported per stage: wall seconds, CPU seconds (user + system), peak RSS, and the seconds spent in
training loops (the `train_seconds` of the stage's units); the rest is model loading, tokenising
and evaluation.

    python benchmarks/stage_profile.py            # the default budget, ~13 min on 2 cores
    python benchmarks/stage_profile.py --quick    # 2 steps per stage, 8 test examples (smoke test)
    python benchmarks/stage_profile.py -- --prompt.length 50   # flags after -- go to every stage

writes benchmarks/results/stage_profile.{json,md} (--name: another stem; with --quick: under
benchmarks/runs/).
A stage already in the JSON with the same flags is skipped; a stage that is not is measured from
scratch (its folder in the run directory is removed first, so a half-finished earlier attempt
does not shorten it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mptune
from mptune.rundir import METRICS_FILE, RunDir

import common

STAGES = ("load", "teach", "distill", "adapt")
QUICK_FLAGS = ["--teach.steps", "2", "--distill.steps", "2", "--adapt.steps", "2", "--data.eval_examples", "8",
               "--compare.spot_source", "sst2"]
"""--quick: 2 steps per stage, 8 test examples per task, SPoT from the SST-2 teacher (no dev probe)."""
LOAD = "from mptune.models import load_backbone; load_backbone()"


def run_stage(stage: str, run_dir: Path, flags: list[str], env: dict) -> dict:
    """Run one stage in a child process; its wall time, CPU time and peak RSS."""
    cmd = [sys.executable, "-c", LOAD] if stage == "load" else \
        [sys.executable, "-m", "mptune.cli", stage, "--out_dir", str(run_dir), *flags]
    print(f"-- {stage}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if code != 0:
        raise SystemExit(f"stage {stage} failed with exit status {code}")
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "train_seconds": train_seconds(run_dir, stage)}


def train_seconds(run_dir: Path, stage: str) -> float:
    """Seconds spent in the training loops of the stage's units (from their metrics.json)."""
    folder = run_dir / stage
    if stage == "load" or not folder.exists():
        return 0.0
    units = [folder] if stage == "distill" else sorted(p.parent for p in folder.rglob(METRICS_FILE))
    return round(sum((RunDir.done(u) or {}).get("train_seconds", 0.0) for u in units), 1)


def write(results: dict, stem: Path) -> str:
    rows = [[s, r["wall_seconds"], r["cpu_seconds"], r["train_seconds"], r["peak_rss_mb"]]
            for s, r in results["stages"].items()]
    done = [r for s, r in results["stages"].items() if s != "load"]
    if len(done) == len(STAGES) - 1:
        rows.append(["**teach + distill + adapt**", round(sum(r["wall_seconds"] for r in done), 1),
                     round(sum(r["cpu_seconds"] for r in done), 1), round(sum(r["train_seconds"] for r in done), 1),
                     max(r["peak_rss_mb"] for r in done)])
    markdown = common.md_table(["stage", "wall s", "CPU s", "training loops s", "peak RSS MB"], rows)
    markdown += (f"\nOne process per stage (each loads the model: see 'load'); flags: "
                 f"{' '.join(results['flags']) or '(the defaults of mptune run)'}; {results['machine']}.\n")
    return common.write_outputs(stem, results, markdown)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test budget: " + " ".join(QUICK_FLAGS))
    parser.add_argument("--out_dir", help="run directory (default: benchmarks/runs/stage_profile[-quick])")
    parser.add_argument("--name", default="stage_profile",
                        help="results file stem under benchmarks/results/ (e.g. one per CPU), also the default run "
                             "directory's name under benchmarks/runs/")
    parser.add_argument("flags", nargs="*", help="extra mptune flags after --, passed to every stage")
    args = parser.parse_args()
    name = args.name + ("-quick" if args.quick else "")
    run_dir = Path(args.out_dir) if args.out_dir else common.RUNS / name
    stem = (common.RUNS / name / "results" if args.quick else common.RESULTS) / args.name
    flags = (QUICK_FLAGS if args.quick else []) + args.flags
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(Path(mptune.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results = common.read_json(common.stem_file(stem, ".json"), {})
    if results.get("flags") != flags:
        results = {"flags": flags, "stages": {}}
    results["machine"] = f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}"
    todo = [s for s in STAGES if s not in results["stages"]]
    print(f"== stage profile of `mptune run` {' '.join(flags)}")
    print(f"   stages to run: {', '.join(todo) or 'none'}; run directory {run_dir}")
    print("   estimated time: " + ("about 2 min" if args.quick else
                                    "about 13 min on 2 free cores (measured 12 min 40 s on 2026-12-01), "
                                    "more when shared"))
    for stage in todo:
        if stage != "load":
            shutil.rmtree(run_dir / stage, ignore_errors=True)
            (run_dir / "results.json").unlink(missing_ok=True)
        results["stages"][stage] = run_stage(stage, run_dir, flags, env)
        print(f"   {stage}: {results['stages'][stage]}")
        write(results, stem)
    print(write(results, stem))
    print(f"written: {stem}.json, .md")


if __name__ == "__main__":
    main()
