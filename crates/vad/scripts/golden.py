#!/usr/bin/env python3
"""Golden outputs for mica-vad from the reference: silero_vad.onnx under onnxruntime.

Inputs are the recordings exactly as the mica decoder gives them (16 kHz mono float32),
written by `cargo run --release -p mica-vad --example dump_audio -- AUDIO_DIR`. The 8 kHz
input is derived from them by averaging sample pairs in float32, which the Rust tests
repeat bit for bit (tests/common/mod.rs), so both sides see identical samples.

The model runs the way silero's OnnxWrapper does inside get_speech_timestamps: windows of
512 (16 kHz) / 256 (8 kHz) samples, the last zero-padded, each with the previous 64 / 32
samples prepended (zeros at the start), state [2, 1, 128] carried, reset per file;
onnxruntime on the CPU with one thread.

Speech timestamps come from silero's own `get_speech_timestamps_from_probs` (the function
its `get_speech_timestamps` ends in), imported from the wheel's utils_vad.py with a stub
`torch` module: that function uses no torch, and loading the model through torch is what
we avoid. Given the onnx probabilities it is exactly `get_speech_timestamps` with
`load_silero_vad(onnx=True)`.

Setup (torch not needed):
    python3 -m venv /tmp/vad-venv && /tmp/vad-venv/bin/pip install onnxruntime numpy
    pip download --no-deps silero-vad==6.2.3 -d /tmp/silero && unzip /tmp/silero/*.whl -d /tmp/silero/wheel
    /tmp/vad-venv/bin/python crates/vad/scripts/golden.py --wheel /tmp/silero/wheel --audio AUDIO_DIR

Writes tests/golden/probabilities.json and tests/golden/timestamps.json.
"""

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime

FILES = [
    "jfk",
    "librivox-0870",
    "librivox-0880",
    "librivox-0890",
    "librivox-0920",
    "librivox-0930",
    "pyannote-sample",
]

# Option sets for the timestamp goldens; keys are get_speech_timestamps' arguments.
OPTION_SETS = {
    "default": {},
    "threshold-0.3": {"threshold": 0.3},
    "threshold-0.7-neg-0.6": {"threshold": 0.7, "neg_threshold": 0.6},
    "silence-300-pad-100": {"min_silence_duration_ms": 300, "speech_pad_ms": 100},
    "pad-200-merge": {"speech_pad_ms": 200},
    "min-speech-1000-pad-0": {"min_speech_duration_ms": 1000, "speech_pad_ms": 0},
    "max-speech-2s": {"max_speech_duration_s": 2.0},
    "max-speech-1s-last-silence": {
        "max_speech_duration_s": 1.0,
        "use_max_poss_sil_at_max_speech": False,
    },
    "max-speech-0.5s": {"max_speech_duration_s": 0.5, "min_silence_duration_ms": 500},
}


def load_utils_vad(wheel: Path):
    stub = types.ModuleType("torch")
    stub.no_grad = lambda: (lambda f: f)
    stub.Tensor = type("Tensor", (), {})
    stub.device = lambda *a, **k: None
    sys.modules["torch"] = stub
    spec = importlib.util.spec_from_file_location(
        "silero_utils_vad", wheel / "silero_vad" / "utils_vad.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_8k(x16: np.ndarray) -> np.ndarray:
    """Pair averages in float32; an odd last sample is dropped."""
    n = len(x16) // 2
    return ((x16[0 : 2 * n : 2] + x16[1 : 2 * n : 2]) * np.float32(0.5)).astype(np.float32)


def run_onnx(session, audio: np.ndarray, sr: int) -> list:
    window = 512 if sr == 16000 else 256
    context_size = 64 if sr == 16000 else 32
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, context_size), dtype=np.float32)
    probs = []
    for start in range(0, len(audio), window):
        chunk = audio[start : start + window]
        if len(chunk) < window:
            chunk = np.pad(chunk, (0, window - len(chunk)))
        x = np.concatenate([context, chunk[None, :].astype(np.float32)], axis=1)
        out, state = session.run(
            None, {"input": x, "state": state, "sr": np.array(sr, dtype=np.int64)}
        )
        context = x[..., -context_size:]
        probs.append(float(out[0, 0]))
    return probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="unpacked silero-vad 6.2.3 wheel")
    parser.add_argument("--audio", type=Path, required=True, help="dump_audio output directory")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "golden"
    )
    args = parser.parse_args()

    utils = load_utils_vad(args.wheel)
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(args.wheel / "silero_vad" / "data" / "silero_vad.onnx"),
        providers=["CPUExecutionProvider"],
        sess_options=opts,
    )

    probabilities = []
    timestamps = []
    for name in FILES:
        x16 = np.fromfile(args.audio / f"{name}.f32", dtype="<f4")
        for sr, audio in ((16000, x16), (8000, to_8k(x16))):
            probs = run_onnx(session, audio, sr)
            probabilities.append(
                {
                    "name": name,
                    "sample_rate": sr,
                    "samples": len(audio),
                    # Sum of the input, to tell a decoder change from a model difference.
                    "input_sum": float(np.sum(audio.astype(np.float64))),
                    "probabilities": [round(p, 7) for p in probs],
                }
            )
            for set_name, kwargs in OPTION_SETS.items():
                speeches = utils.get_speech_timestamps_from_probs(
                    probs, sampling_rate=sr, audio_length_samples=len(audio), **kwargs
                )
                timestamps.append(
                    {
                        "name": name,
                        "sample_rate": sr,
                        "options": set_name,
                        "samples": len(audio),
                        "segments": [[int(s["start"]), int(s["end"])] for s in speeches],
                    }
                )
            print(f"{name} @ {sr}: {len(probs)} windows", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "reference": "silero-vad 6.2.3 silero_vad.onnx, onnxruntime "
        + onnxruntime.__version__
        + ", CPU, 1 thread",
        "generator": "crates/vad/scripts/golden.py",
    }
    with open(args.out / "probabilities.json", "w") as f:
        json.dump({**meta, "files": probabilities}, f, separators=(",", ":"))
        f.write("\n")
    with open(args.out / "timestamps.json", "w") as f:
        json.dump(
            {**meta, "option_sets": OPTION_SETS, "cases": timestamps}, f, separators=(",", ":")
        )
        f.write("\n")


if __name__ == "__main__":
    main()
