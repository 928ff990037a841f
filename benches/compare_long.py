#!/usr/bin/env python3
"""Long recordings: mica against faster-whisper on the long-english set, same run.

    ~/.cache/mica/venv/bin/python benches/compare_long.py [--model tiny.en|base] [--beam 5]

1. Builds `target/release/mica` and writes the long evaluation sets with
   `cargo run --release -p mica-testdata --example write` (real voices with exact turns
   and words: crates/testdata).
2. On long-english (626 s: Allison's 154 telephone prompts, the LibriVox reader, the
   card-game speaker, JFK; pauses of faint room tone) and on long-english-silent (the same
   with digital silence in the pauses), in both long-form modes:
   - sequential: faster-whisper 1.2.1 `WhisperModel.transcribe` (int8, cpu_threads=2) and
     `mica transcribe --precision q8_0`;
   - VAD-batched: faster-whisper's `BatchedInferencePipeline` (its Silero VAD, batch 8) and
     `mica transcribe --vad --precision q8_0`;
   both on the same CT2 weights, beam as given, language en, other options at defaults.
3. Prints per run: wall seconds (model load excluded on both sides), WER (one English
   normaliser for both) and the utterances lost: an utterance is lost when fewer than
   half of its words appear in the text of the segments overlapping it (1 s of slack).
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from compare_asr import ROOT, normalize, unpack_ct2, wer


def utterances(rttm: Path, text: Path):
    """(start, end, words) of every English utterance (long-english is all English)."""
    spans = []
    for line in rttm.read_text().splitlines():
        f = line.split()
        start, dur = float(f[3]), float(f[4])
        spans.append((start, start + dur))
    lines = text.read_text().splitlines()
    assert len(lines) == len(spans), "one text line per utterance"
    return [(a, b, t) for (a, b), t in zip(spans, lines)]


def lost(utts, segments):
    """Utterances whose words mostly do not appear in the segments overlapping them."""
    out = []
    for start, end, words in utts:
        near = " ".join(t for (a, b, t) in segments if a < end + 1.0 and b > start - 1.0)
        have = set(normalize(near))
        want = normalize(words)
        found = sum(w in have for w in want)
        if found * 2 < len(want):
            out.append((start, words))
    return out


def run_fw(model_dir: Path, audio: Path, beam: int, batched: bool):
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    started = time.perf_counter()
    if batched:
        pipe = BatchedInferencePipeline(model)
        segs, _ = pipe.transcribe(str(audio), beam_size=beam, language="en", batch_size=8)
    else:
        segs, _ = model.transcribe(str(audio), beam_size=beam, language="en")
    segs = [(s.start, s.end, s.text) for s in segs]
    return time.perf_counter() - started, segs


def run_mica(model: str, audio: Path, beam: int, batched: bool):
    cmd = [str(ROOT / "target/release/mica"), "transcribe", str(audio), "--model", model,
           "--language", "en", "--beam-size", str(beam), "--precision", "q8_0", "-q"]
    if batched:
        cmd.append("--vad")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    segs = [(s["start"], s["end"], s["text"]) for s in report["transcript"]["segments"]]
    # Wall time of the analysis (model load excluded); the stages sum the parts' times.
    return report["timings"]["total"], segs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"])
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--skip-fw", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "mica-cli"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["cargo", "run", "--release", "-q", "-p", "mica-testdata", "--example",
                        "write", "--", str(tmp)], cwd=ROOT, check=True)
        utts = utterances(tmp / "long-english.rttm", tmp / "long-english.txt")
        reference = " ".join(u[2] for u in utts)
        print(f"long-english: {len(utts)} utterances, {len(normalize(reference))} words, "
              f"model {args.model}, beam {args.beam}")
        ct2 = None if args.skip_fw else unpack_ct2(args.model, tmp)
        for name in ("long-english", "long-english-silent"):
            audio = tmp / f"{name}.wav"
            for batched in (False, True):
                mode = f"{name:19} {'VAD-batched' if batched else 'sequential':11}"
                rows = []
                if ct2:
                    rows.append(("faster-whisper int8", *run_fw(ct2, audio, args.beam, batched)))
                rows.append(("mica q8_0", *run_mica(args.model, audio, args.beam, batched)))
                fw_secs = rows[0][1] if ct2 else None
                for who, secs, segs in rows:
                    text = " ".join(s[2] for s in segs)
                    gone = lost(utts, segs)
                    line = (f"{mode} {who:20} {secs:6.1f} s  WER {100 * wer(reference, text):5.2f}%"
                            f"  lost {len(gone)} of {len(utts)}")
                    if fw_secs and who.startswith("mica"):
                        line += f"  time / fw {secs / fw_secs:.2f}"
                    print(line, flush=True)
                    for start, words in gone[:8]:
                        print(f"    lost at {start:7.2f} s: {words}")

if __name__ == "__main__":
    main()
