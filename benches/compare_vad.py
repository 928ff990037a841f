#!/usr/bin/env python3
"""Silero VAD speed: mica against onnxruntime on the same 10-minute recording, same run.

    python3 benches/compare_vad.py [--repeat 5] [--minutes 10] [--keep FILE.wav]

1. Builds `target/release/mica` and the `vad_speed` example (release), and fetches the test
   recordings and the silero-v6 model through `mica models fetch` (no-ops when installed).
2. Writes a 16 kHz mono recording (stdlib `wave`) of the real fixtures (LibriVox, JFK,
   telephone prompts, the pyannote sample) in turn, each followed by 1 s of silence, as
   long as whole files fit in `--minutes`.
3. onnxruntime (silero_vad.onnx from the silero-vad 6.2.3 wheel mica's model store keeps;
   1 intra-op and 1 inter-op thread) runs the loop of silero's OnnxWrapper in numpy: 512-sample
   windows, the previous 64 samples prepended, state carried, the last window zero-padded.
   Then the same with the file split in 32 parts, 32 streams per call (state [2, 32, 128]).
4. mica runs `vad_speed` on the same file: the model alone (loaded and warmed first), one
   stream through `Vad::detect`, then 32 batched streams through `SileroVad::forward`; once
   with candle's default threads (every core) and once with `RAYON_NUM_THREADS=1`.
5. Prints medians: windows/s, x real time, mica/onnxruntime, and whether mica's speech
   regions equal silero's `get_speech_timestamps_from_probs` on the onnxruntime
   probabilities (default options).

onnxruntime and numpy go into a venv under ~/.cache/mica/venv (pip, by package name) when
missing; the script re-runs itself there.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "mica" / "venv"
RATE = 16_000
WINDOW = 512
CONTEXT = 64
STREAMS = 32
# Fixture recordings (asset, file), in the order they are concatenated.
FIXTURES = [
    ("librivox", "0870.wav"),
    ("librivox", "0880.wav"),
    ("jfk", "jfk.wav"),
    ("librivox", "0890.wav"),
    ("cards", "001.wav"),
    ("cards", "002.wav"),
    ("librivox", "0920.wav"),
    ("cards", "003.wav"),
    ("pyannote-sample", "sample.wav"),
    ("librivox", "0930.wav"),
    ("cards", "004.wav"),
    ("cards", "005.wav"),
]
SILERO_WHEEL = "silero_vad-6.2.3-py3-none-any.whl"


def in_venv():
    """Re-runs this script in the venv, creating it and installing packages if needed."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        print(f"creating {VENV}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = subprocess.run([str(python), "-c", "import onnxruntime, numpy"], capture_output=True)
    if probe.returncode != 0:
        print("installing onnxruntime and numpy", file=sys.stderr)
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy"])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def cargo_build():
    for args in (
        ["build", "--release", "-p", "mica-cli"],
        ["build", "--release", "-p", "mica-vad", "--example", "vad_speed"],
    ):
        subprocess.check_call(["cargo", *args], cwd=ROOT)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "mica", target / "release" / "examples" / "vad_speed"


def cache_dir(var, leaf):
    return Path(os.environ.get(var, Path.home() / ".cache" / "mica" / leaf))


def write_recording(path: Path, minutes: float) -> float:
    """Concatenates the fixtures with 1 s silences; returns the duration in seconds."""
    samples = cache_dir("MICA_SAMPLES", "samples")
    limit = int(minutes * 60 * RATE)
    silence = b"\x00\x00" * RATE
    total = 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        while True:
            added = False
            for asset, name in FIXTURES:
                with wave.open(str(samples / asset / name), "rb") as w:
                    if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                        sys.exit(f"{asset}/{name}: expected 16 kHz mono 16-bit")
                    n = w.getnframes()
                    if total + n + RATE > limit:
                        continue
                    out.writeframes(w.readframes(n))
                    out.writeframes(silence)
                    total += n + RATE
                    added = True
            if not added:
                break
    return total / RATE


def silero_wheel(tmp: Path) -> Path:
    """Unpacks the silero-vad wheel (from mica's package cache, else pip download)."""
    wheel = cache_dir("MICA_PACKAGES", "packages") / "pip-silero-vad-6.2.3" / SILERO_WHEEL
    if not wheel.exists():
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "silero-vad==6.2.3",
             "-d", str(tmp)]
        )
        wheel = tmp / SILERO_WHEEL
    out = tmp / "wheel"
    with zipfile.ZipFile(wheel) as z:
        for member in ("silero_vad/data/silero_vad.onnx", "silero_vad/utils_vad.py"):
            z.extract(member, out)
    return out / "silero_vad"


def load_utils_vad(pkg: Path):
    """silero's utils_vad, loaded as the golden script does (with a stub torch)."""
    spec = importlib.util.spec_from_file_location(
        "mica_vad_golden", ROOT / "crates" / "vad" / "scripts" / "golden.py"
    )
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    return golden.load_utils_vad(pkg.parent)


def read_wav(path: Path):
    import numpy as np

    with wave.open(str(path), "rb") as w:
        data = w.readframes(w.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)).copy()


def onnx_single(session, audio):
    """silero's OnnxWrapper loop for one stream; returns per-window probabilities."""
    import numpy as np

    n = -(-len(audio) // WINDOW)
    x = np.zeros(n * WINDOW, dtype=np.float32)
    x[: len(audio)] = audio
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    sr = np.array(RATE, dtype=np.int64)
    probs = np.empty(n, dtype=np.float32)
    for i in range(n):
        inp = np.concatenate([context, x[None, i * WINDOW : (i + 1) * WINDOW]], axis=1)
        out, state = session.run(None, {"input": inp, "state": state, "sr": sr})
        context = inp[:, -CONTEXT:]
        probs[i] = out[0, 0]
    return probs


def onnx_batched(session, audio):
    """The file split in STREAMS consecutive parts, one window of each per call."""
    import numpy as np

    steps = -(-len(audio) // (STREAMS * WINDOW))
    x = np.zeros(STREAMS * steps * WINDOW, dtype=np.float32)
    x[: len(audio)] = audio
    parts = x.reshape(STREAMS, steps * WINDOW)
    state = np.zeros((2, STREAMS, 128), dtype=np.float32)
    context = np.zeros((STREAMS, CONTEXT), dtype=np.float32)
    sr = np.array(RATE, dtype=np.int64)
    probs = np.empty((STREAMS, steps), dtype=np.float32)
    for i in range(steps):
        inp = np.concatenate([context, parts[:, i * WINDOW : (i + 1) * WINDOW]], axis=1)
        out, state = session.run(None, {"input": inp, "state": state, "sr": sr})
        context = inp[:, -CONTEXT:]
        probs[:, i] = out[:, 0]
    return probs, steps * STREAMS


def timed(repeat, f):
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per engine (median)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording")
    parser.add_argument("--keep", type=Path, help="also write the recording here")
    parser.add_argument("--no-build", action="store_true", help="use the built binaries as they are")
    args = parser.parse_args()
    in_venv()

    import numpy as np
    import onnxruntime

    if args.no_build:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
        mica, speed = target / "mica", target / "examples" / "vad_speed"
    else:
        mica, speed = cargo_build()
    assets = ["silero-v6", "jfk", "librivox", "cards", "pyannote-sample"]
    subprocess.check_call([str(mica), "models", "fetch", *assets], stdout=subprocess.DEVNULL)

    with tempfile.TemporaryDirectory(prefix="mica-vad-bench-") as tmp:
        tmp = Path(tmp)
        wav = args.keep or tmp / "vad-bench.wav"
        seconds = write_recording(wav, args.minutes)
        pkg = silero_wheel(tmp)
        utils = load_utils_vad(pkg)
        audio = read_wav(wav)

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(pkg / "data" / "silero_vad.onnx"),
            providers=["CPUExecutionProvider"],
            sess_options=opts,
        )
        onnx_single(session, audio[: RATE * 5])  # warm-up
        print(f"onnxruntime {onnxruntime.__version__}: {args.repeat} runs each", file=sys.stderr)
        ort_single_s, probs = timed(args.repeat, lambda: onnx_single(session, audio))
        ort_batch_s, (_, ort_batch_windows) = timed(args.repeat, lambda: onnx_batched(session, audio))
        reference = utils.get_speech_timestamps_from_probs(
            [float(p) for p in probs], sampling_rate=RATE, audio_length_samples=len(audio)
        )
        reference = [[int(s["start"]), int(s["end"])] for s in reference]

        runs = {}
        one = {"RAYON_NUM_THREADS": "1", "CANDLE_NUM_THREADS": "1"}
        for label, env, extra in (
            ("default", {}, []),
            ("1", one, []),
            # One single-threaded worker per core, each with half the streams: how the
            # engine's workers run the model.
            ("workers", one, ["--workers", "2", "--streams", str(STREAMS // 2)]),
        ):
            print(f"mica, threads {label}", file=sys.stderr)
            streams = [] if extra else ["--streams", str(STREAMS)]
            out = subprocess.run(
                [str(speed), str(wav), "--repeat", str(args.repeat), *streams, *extra],
                env={**os.environ, "MICA_LOG": "warn", **env},
                check=True,
                capture_output=True,
                text=True,
            )
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])

    windows = len(probs)
    rows = [("onnxruntime", "1 stream", "1", windows / ort_single_s, None)]
    for label, run in runs.items():
        if label == "workers":
            continue
        t = f"{run['threads']}"
        rows.append(("mica", "1 stream", t, run["single"]["windows"] / run["single"]["median_s"], 0))
    rows.append(("onnxruntime", f"{STREAMS} streams batched", "1", ort_batch_windows / ort_batch_s, None))
    for label, run in runs.items():
        if label == "workers":
            w = run["workers"]
            mode = f"{STREAMS} streams, {w['workers']} workers x {w['streams_per_worker']}"
            rows.append(("mica", mode, f"{w['workers']} x 1", windows / w["median_s"], 1))
            continue
        b = run["batched"]
        rows.append(("mica", f"{STREAMS} streams batched", f"{run['threads']}", b["windows"] / b["median_s"], 1))
    base = {0: windows / ort_single_s, 1: ort_batch_windows / ort_batch_s}

    print(f"\nSilero VAD v6.2, {seconds:.0f} s of 16 kHz audio ({windows} windows), median of {args.repeat} runs")
    print("| engine | mode | threads | windows/s | x real time | mica / onnxruntime |")
    print("|---|---|---|---|---|---|")
    for engine, mode, threads, wps, kind in rows:
        ratio = "" if kind is None else f"{wps / base[kind]:.2f}x"
        print(f"| {engine} | {mode} | {threads} | {wps:,.0f} | {wps * WINDOW / RATE:,.0f}x | {ratio} |")
    for label, run in runs.items():
        if label == "workers":
            continue
        same = run["segments"] == reference
        diff = run["batched"]["stream0_max_abs_diff_vs_single"]
        print(
            f"\nmica (threads {run['threads']}): {len(run['segments'])} speech regions, "
            f"{'identical to' if same else 'DIFFERENT from'} get_speech_timestamps on the "
            f"onnxruntime probabilities ({len(reference)} regions); batched stream 0 vs single "
            f"stream max abs diff {diff:.1e}"
        )
        if not same:
            ours = {tuple(s) for s in run["segments"]}
            theirs = {tuple(s) for s in reference}
            print(f"  only mica: {sorted(ours - theirs)[:5]}  only reference: {sorted(theirs - ours)[:5]}")
    print(f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}; {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
