#!/usr/bin/env python3
"""Analyse many media files on a Ray cluster: each file planned into parts, the parts run
by Ray Data on stateful actors (each loads the models once), the parts merged per file and
every file's sidecar set written.

    python examples/ray/analyze_files.py --out-dir out/ [--address auto] [--workers 2]
        [--tasks vad,asr,diarize] [--model tiny.en] [--part-seconds 60] FILE...

The files must be readable at the same path on every node (shared storage). A file that
cannot be planned or whose part fails is reported in out/report.json and the others go
on. A worker that dies mid-part is restarted by Ray and the part runs again.
"""

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import ray

import mica

# Sidecar files written for each input, by what the analysis holds.
SIDECARS = [
    ("analysis.json", "json", None),
    ("srt", "srt", "transcript"),
    ("vtt", "vtt", "transcript"),
    ("txt", "txt", "transcript"),
    ("rttm", "rttm", "speakers"),
    ("shots.csv", "csv", "shots"),
    ("edl", "edl", "shots"),
]


class PartRunner:
    """A Ray Data actor: loads the models once, then runs parts of plans."""

    def __init__(self, analyzer_options):
        self.analyzer = mica.Analyzer(**analyzer_options)

    def __call__(self, batch):
        out = {"file": [], "index": [], "result": [], "error": []}
        for file, plan, index in zip(batch["file"], batch["plan"], batch["index"]):
            out["file"].append(file)
            out["index"].append(int(index))
            try:
                result = self.analyzer.run_part(json.loads(plan), int(index))
                out["result"].append(json.dumps(result))
                out["error"].append("")
            except mica.MicaError as e:
                # The file fails alone; the others go on.
                out["result"].append("")
                out["error"].append(f"part {index}: {type(e).__name__}: {e}")
        return out


def write_sidecars(analysis, source, out_dir):
    """Every file of `analysis` for `source` into `out_dir`; the names written."""
    stem = Path(source).stem
    data = analysis.to_dict()
    written = []
    for suffix, fmt, needs in SIDECARS:
        if needs is not None and data.get(needs) is None:
            continue
        if fmt == "rttm" and data.get("speakers") is None and data.get("speech") is None:
            continue
        name = f"{stem}.{suffix}"
        text = analysis.render(fmt)
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)
        written.append(name)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    ap.add_argument("--workers", type=int, default=2, help="actors running parts at once")
    ap.add_argument("--tasks", default="vad,asr,diarize")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--part-seconds", type=float, default=60.0)
    ap.add_argument("--gpus", type=float, default=None, help="GPUs per actor (default: 1 when the cluster has GPUs)")
    args = ap.parse_args(argv)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    ray.init(address=args.address, log_to_driver=False)
    gpus = args.gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    options = {
        "tasks": args.tasks.split(","),
        "model": args.model,
        "device": "auto" if gpus > 0 else "cpu",
        # One CPU per actor: single-threaded workers side by side beat one wide worker.
        "threads": 1,
    }

    # Plan every file in the driver (only the VAD runs); a file that cannot be planned
    # is reported and left out.
    planner = mica.Analyzer(**{**options, "threads": None})
    report = {}
    plans = {}
    rows = []
    for file in args.files:
        try:
            plan = planner.plan(file, part_seconds=args.part_seconds)
        except mica.MicaError as e:
            report[file] = {"ok": False, "error": f"plan: {type(e).__name__}: {e}"}
            continue
        plans[file] = plan
        for part in plan["parts"]:
            rows.append({"file": file, "plan": json.dumps(plan), "index": part["index"]})

    results = defaultdict(list)
    errors = defaultdict(list)
    if rows:
        # One block per part, made in the driver: no task upstream competes with the
        # actors for the cluster's CPUs.
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        done = ds.map_batches(
            PartRunner,
            fn_constructor_kwargs={"analyzer_options": options},
            batch_size=1,
            concurrency=args.workers,
            num_cpus=1,
            num_gpus=gpus,
            # A worker that dies is restarted and its part runs again.
            max_restarts=-1,
            max_task_retries=-1,
        )
        for row in done.iter_rows():
            if row["error"]:
                errors[row["file"]].append(row["error"])
            else:
                results[row["file"]].append(json.loads(row["result"]))

    for file, plan in plans.items():
        if errors[file]:
            report[file] = {"ok": False, "error": "; ".join(sorted(errors[file]))}
            continue
        try:
            analysis = planner.merge(plan, results[file])
            written = write_sidecars(analysis, file, args.out_dir)
            report[file] = {"ok": True, "parts": len(plan["parts"]), "written": written}
        except mica.MicaError as e:
            report[file] = {"ok": False, "error": f"merge: {type(e).__name__}: {e}"}

    (args.out_dir / "report.json").write_text(json.dumps(report, indent=2))
    failed = [f for f, r in report.items() if not r["ok"]]
    for f in failed:
        print(f"{f}: {report[f]['error']}", file=sys.stderr)
    print(f"{len(report) - len(failed)} of {len(report)} files analysed into {args.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
