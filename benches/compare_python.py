#!/usr/bin/env python3
"""The Python package against the CLI, and the Ray fan-out against one worker, same run.

    ~/.cache/mica/py-venv/bin/python benches/compare_python.py

Needs the package and Ray in the running Python (`pip install ./bindings/python
"ray[data]"`). Builds a 10-minute recording (the pyannote sample and JFK, alternating) and
four of about two minutes, then prints:

1. `mica analyze` (its timings.total: model load excluded) against
   `mica.Analyzer(...).analyze(path)` plus `to_dict()` (wall, model load excluded), same
   tasks (vad,asr,diarize), same threads (all): the binding's cost.
2. examples/ray/analyze_files.py on a local Ray cluster of 2 CPUs over the four files,
   with 1 worker and with 2 single-CPU workers (driver wall, planning and merging included).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

import mica

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("MICA_SAMPLES", Path.home() / ".cache/mica/samples"))
CLI = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "mica"


def read(path):
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def write(path, pieces):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(pieces).tobytes())


def main():
    tmp = Path(tempfile.mkdtemp(prefix="mica-bench-"))
    conv, jfk = read(SAMPLES / "pyannote-sample/sample.wav"), read(SAMPLES / "jfk/jfk.wav")
    gap = np.zeros(16000, dtype="<i2")
    unit = [conv, gap, jfk, gap]
    seconds = sum(len(p) for p in unit) / 16000
    write(tmp / "ten.wav", unit * int(round(600 / seconds)))
    for i in range(4):
        write(tmp / f"file{i}.wav", unit * 3)

    print("## Python Analyzer against mica analyze, 10-minute recording, vad,asr,diarize")
    run = subprocess.run([CLI, "analyze", tmp / "ten.wav", "-q"], check=True, capture_output=True)
    cli = json.loads(run.stdout)["timings"]["total"]
    analyzer = mica.Analyzer(tasks=["vad", "asr", "diarize"])
    t = time.perf_counter()
    analysis = analyzer.analyze(tmp / "ten.wav")
    analysis.to_dict()
    py = time.perf_counter() - t
    print(f"| mica analyze | {cli:.1f} s |\n| mica.Analyzer.analyze + to_dict | {py:.1f} s |")
    print(f"Python / CLI: {py / cli:.3f}")

    print("\n## Ray fan-out, 4 files of about 2 minutes, local cluster of 2 CPUs")
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                    "--port", "6391", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True)
    try:
        walls = {}
        for workers in (1, 2):
            t = time.perf_counter()
            subprocess.run([sys.executable, ROOT / "examples/ray/analyze_files.py", "--address",
                            "127.0.0.1:6391", "--out-dir", tmp / f"out{workers}", "--workers",
                            str(workers), *[tmp / f"file{i}.wav" for i in range(4)]],
                           check=True, capture_output=True)
            walls[workers] = time.perf_counter() - t
            print(f"| {workers} worker(s) | {walls[workers]:.1f} s |")
        print(f"2 workers / 1 worker throughput: {walls[1] / walls[2]:.2f}x")
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
