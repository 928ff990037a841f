#!/usr/bin/env python3
"""The whole analysis against the peer's transcription alone, and the worker pool's scaling.

    ~/.cache/mica/venv/bin/python benches/compare_analyze.py [--minutes 10] [--skip-fw]

1. Builds `target/release/mica` and writes the 10-minute recording of compare_asr.py (the
   real fixtures with their transcriptions, 2-4 s pauses).
2. faster-whisper 1.2.1 int8, beam 5, cpu_threads=2, language en: the time of its
   `transcribe` (audio decoding included, model load not).
3. mica, tiny.en q8_0, beam 5, language en, every core: `analyze --tasks asr,vad,diarize`
   and `transcribe` (the engine with the asr task only); the time is the document's
   `timings.total` (decode to document, model load not).
4. The pool's scaling: `analyze --tasks asr,vad,diarize` with 1 thread and 1 worker, then
   with 2 threads and 2 workers (one thread each), and 2 threads with 1 worker; the ratio is
   throughput over the 1-thread run.
5. Many short inputs: 50 clips of 5 to 20 s cut from the recording, analysed by one
   `analyze c0.wav ... c49.wav --out-dir` call, then by one `analyze` process per clip
   (model loads included: that is what a per-file job pays).
6. Prints seconds, x real time, WER against the fixtures' words, parts, and the ratios.
"""

import argparse
import json
import subprocess
import tempfile
import time
import wave
from pathlib import Path

from compare_asr import ROOT, SR, build_file, run_fw, unpack_ct2, wer

COMMON = ["--model", "tiny.en", "--precision", "q8_0", "--beam-size", "5", "--language", "en"]


def run_mica(audio: Path, command: str, extra: list):
    args = [str(ROOT / "target/release/mica"), command, str(audio), *COMMON, *extra, "-q"]
    started = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    doc = json.loads(out.stdout)
    text = " ".join(s["text"] for s in doc["transcript"]["segments"])
    return doc["timings"]["total"], wall, text, len(doc.get("parts", []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--skip-fw", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "mica-cli"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = tmp / "long.wav"
        reference = build_file(audio, args.minutes)
        with wave.open(str(audio)) as w:
            duration = w.getnframes() / SR
        print(f"input: {duration:.0f} s, {len(reference.split())} reference words, tiny.en, beam 5")
        fw = None
        if not args.skip_fw:
            secs, text = run_fw(unpack_ct2("tiny.en", tmp), audio, "int8", 5)
            fw = secs
            print(f"faster-whisper int8 transcribe:           {secs:6.1f} s {duration / secs:5.1f}x rt "
                  f"WER {100 * wer(reference, text):.1f}%", flush=True)
        runs = [
            ("mica analyze asr,vad,diarize", "analyze", ["--tasks", "asr,vad,diarize"]),
            ("mica transcribe (engine, asr only)", "transcribe", []),
        ]
        got = {}
        for name, command, extra in runs:
            total, wall, text, parts = run_mica(audio, command, extra)
            got[name] = total
            line = (f"{name:40} {total:6.1f} s {duration / total:5.1f}x rt WER "
                    f"{100 * wer(reference, text):.1f}% ({parts} parts; {wall:.1f} s with load)")
            if fw:
                line += f"  / fw int8 {total / fw:.2f}"
            print(line, flush=True)
        a, t = got[runs[0][0]], got[runs[1][0]]
        print(f"analyze / transcribe: {a / t:.2f}", flush=True)
        print("scaling of analyze --tasks asr,vad,diarize:")
        base = None
        for threads, workers in ((1, 1), (2, 2), (2, 1)):
            total, _, text, parts = run_mica(
                audio, "analyze",
                ["--tasks", "asr,vad,diarize", "--threads", str(threads), "--workers", str(workers)])
            base = base or total
            print(f"  {threads} threads, {workers} workers: {total:6.1f} s, {parts} parts, "
                  f"WER {100 * wer(reference, text):.1f}%, throughput x{base / total:.2f}", flush=True)
        batch(audio, tmp)


def batch(audio: Path, tmp: Path):
    with wave.open(str(audio)) as w:
        frames = w.readframes(w.getnframes())
    clips = []
    for i in range(50):
        seconds = 5 + (i * 7) % 16
        start = ((i * 13) % 580) * SR * 2
        path = tmp / f"c{i}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes(frames[start:start + seconds * SR * 2])
        clips.append(str(path))
    mica = str(ROOT / "target/release/mica")
    args = ["--tasks", "asr,vad,diarize", *COMMON, "-q"]
    started = time.perf_counter()
    subprocess.run([mica, "analyze", *clips, "--out-dir", str(tmp / "one"), *args], check=True)
    one = time.perf_counter() - started
    started = time.perf_counter()
    for clip in clips:
        subprocess.run([mica, "analyze", clip, "--out-dir", str(tmp / "each"), *args], check=True)
    each = time.perf_counter() - started
    print(f"50 clips of 5-20 s: one call {one:.1f} s, one process per clip {each:.1f} s, "
          f"throughput x{each / one:.2f}", flush=True)


if __name__ == "__main__":
    main()
