#!/usr/bin/env python3
"""Golden outputs for mica-diarize from PyTorch references of both networks, and DER
figures from pyannote.metrics.

Segmentation: pyannote's PyanNet as in pyannote.audio (SincNet with asteroid's ParamSincFB
filters, 80 filters of 251 taps, stride 10; 4 bidirectional LSTM layers of 128; two linear
layers of 128 with leaky ReLU; 3-class classifier; sigmoid), rebuilt here from its source
and loaded with the original state_dict from `whisperx==3.8.6`
(`whisperx/assets/pytorch_model.bin`).

Embedding: resemblyzer's VoiceEncoder (`resemblyzer==0.1.4`, `resemblyzer/pretrained.pt`):
a 3-layer LSTM of 256 over 40-band mel frames, the last layer's final hidden state through
linear + ReLU, L2-normalised. Its front end is librosa's `melspectrogram(sr=16000,
n_fft=400, hop_length=160, n_mels=40)` (power 2, periodic Hann window, centred frames with
zero padding as librosa >= 0.10 does, Slaney mel scale and area normalisation), ported to
numpy here so librosa (and numba) are not needed.

DER: pyannote.metrics' DiarizationErrorRate on the pyannote sample's reference against
hand-made hypotheses (boundaries moved, labels swapped, a speaker missed, one too many),
with collars 0 and +-0.25 s (pyannote's `collar=0.5`), overlap scored.

Inputs are 16-bit PCM WAV files read with the `wave` module (s / 32768), which is what the
mica decoder gives for them; the Rust tests check each input's sum.

Setup: the torch venv (torch, numpy, pyannote.metrics) and the two wheels unpacked:
    pip download --no-deps whisperx==3.8.6 resemblyzer==0.1.4 -d /tmp/w
    unzip /tmp/w/whisperx-*.whl -d /tmp/w/wx; unzip /tmp/w/Resemblyzer-*.whl -d /tmp/w/rz
    python crates/diarize/scripts/golden.py --segmentation /tmp/w/wx/whisperx/assets/pytorch_model.bin \
        --encoder /tmp/w/rz/resemblyzer/pretrained.pt --samples ~/.cache/mica/samples

Writes tests/golden/segmentation.json, tests/golden/embedding.json, tests/golden/der.json.
"""

import argparse
import json
import pickle
import types
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden"


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


class _Stub:
    def __init__(self, *a, **k):
        pass

    def __setstate__(self, state):
        self.state = state


class _Unpickler(pickle.Unpickler):
    """The lightning checkpoint pickles omegaconf/pyannote objects next to the weights;
    only the state_dict is needed, so unknown classes become stubs."""

    def find_class(self, mod, name):
        try:
            return super().find_class(mod, name)
        except Exception:
            return type(name, (_Stub,), {})


_pm = types.ModuleType("stub_pickle")
_pm.Unpickler = _Unpickler
_pm.load = pickle.load


# ----------------------------------------------------------------------------- PyanNet
class ParamSincFB(nn.Module):
    """asteroid_filterbanks.ParamSincFB (n_filters=80, kernel_size=251) as pyannote uses it."""

    def __init__(self, n_filters=80, kernel_size=251, sample_rate=16000, min_low_hz=50, min_band_hz=50):
        super().__init__()
        self.n_filters, self.kernel_size, self.sample_rate = n_filters, kernel_size, sample_rate
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        half = kernel_size // 2
        self.low_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
        self.register_buffer("window_", torch.from_numpy(np.hamming(kernel_size)[:half]).float())
        self.register_buffer("n_", 2 * np.pi * (torch.arange(-half, 0.0).view(1, -1) / sample_rate))

    def filters(self):
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = torch.clamp(low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, self.sample_rate / 2)
        band = (high - low)[:, 0]
        ft_low = torch.matmul(low, self.n_)
        ft_high = torch.matmul(high, self.n_)
        left = ((torch.sin(ft_high) - torch.sin(ft_low)) / (self.n_ / 2)) * self.window_
        cos = torch.cat([left, 2 * band.view(-1, 1), torch.flip(left, dims=[1])], dim=1) / (2 * band[:, None])
        left = ((torch.cos(ft_low) - torch.cos(ft_high)) / (self.n_ / 2)) * self.window_
        sin = torch.cat([left, torch.zeros_like(band.view(-1, 1)), -torch.flip(left, dims=[1])], dim=1) / (2 * band[:, None])
        return torch.cat([cos, sin], dim=0).view(self.n_filters, 1, self.kernel_size)


class SincNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.filterbank = ParamSincFB()
        self.conv1d = nn.ModuleList([nn.Identity(), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(80, affine=True), nn.InstanceNorm1d(60, affine=True), nn.InstanceNorm1d(60, affine=True)])

    def forward(self, x):
        x = self.wav_norm1d(x)
        for c in range(3):
            x = F.conv1d(x, self.filterbank.filters(), stride=10) if c == 0 else self.conv1d[c](x)
            if c == 0:
                x = torch.abs(x)
            x = F.leaky_relu(self.norm1d[c](F.max_pool1d(x, 3, stride=3)))
        return x


class PyanNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.sincnet = SincNet()
        self.lstm = nn.LSTM(60, 128, num_layers=4, bidirectional=True, batch_first=True)
        self.linear = nn.ModuleList([nn.Linear(256, 128), nn.Linear(128, 128)])
        self.classifier = nn.Linear(128, 3)

    def forward(self, waveforms):
        x = self.sincnet(waveforms).transpose(1, 2)
        x, _ = self.lstm(x)
        for lin in self.linear:
            x = F.leaky_relu(lin(x))
        return torch.sigmoid(self.classifier(x))


def load_pyannet(path):
    ck = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_pm)
    sd = dict(ck["state_dict"])
    for k in list(sd):
        if k.startswith("sincnet.conv1d.0.filterbank."):
            sd[k.replace("sincnet.conv1d.0.filterbank.", "sincnet.filterbank.")] = sd.pop(k)
    net = PyanNet()
    net.load_state_dict(sd, strict=True)
    return net.eval()


# ------------------------------------------------------------------------ VoiceEncoder
class VoiceEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels):
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def load_encoder(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    enc = VoiceEncoder()
    enc.load_state_dict(ck["model_state"], strict=False)
    return enc.eval()


def hz_to_mel(f):
    f = np.asanyarray(f, dtype=np.float64)
    mels = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, mels)


def mel_to_hz(m):
    m = np.asanyarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), (200.0 / 3) * m)


def mel_filters(sr=16000, n_fft=400, n_mels=40):
    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    w = np.zeros((n_mels, 1 + n_fft // 2))
    for i in range(n_mels):
        w[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    w *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def melspectrogram(wav):
    """[frames, 40] float32, as resemblyzer.audio.wav_to_mel_spectrogram."""
    n_fft, hop = 400, 160
    x = np.pad(wav.astype(np.float32), n_fft // 2, mode="constant")
    n = 1 + (len(x) - n_fft) // hop
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    frames = np.stack([x[i * hop : i * hop + n_fft] for i in range(n)]) * window
    spec = np.abs(np.fft.rfft(frames.astype(np.float64), axis=1)) ** 2
    return (spec.astype(np.float32) @ mel_filters().T).astype(np.float32)


def rounded(a, digits=7):
    return [round(float(v), digits) for v in np.asarray(a).reshape(-1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segmentation", required=True)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--samples", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    samples = Path(args.samples).expanduser()
    sample = read_wav(samples / "pyannote-sample" / "sample.wav")
    libri = read_wav(samples / "librivox" / "0870.wav")
    OUT.mkdir(parents=True, exist_ok=True)

    # Segmentation: 5 s windows, the last one running past the end (zero-padded).
    net = load_pyannet(args.segmentation)
    cases = [("pyannote-sample", sample, 0), ("pyannote-sample", sample, 160000), ("pyannote-sample", sample, 432000), ("librivox-0870", libri, 16000)]
    windows = []
    for name, audio, start in cases:
        chunk = np.zeros(80000, dtype=np.float32)
        have = audio[start : start + 80000]
        chunk[: len(have)] = have
        with torch.no_grad():
            probs = net(torch.from_numpy(chunk)[None, None])[0].numpy()
        windows.append({"file": name, "start": start, "input_sum": float(np.sum(have, dtype=np.float64)), "frames": probs.shape[0], "probabilities": rounded(probs)})
    (OUT / "segmentation.json").write_text(json.dumps({"windows": windows}) + "\n")

    # Embedding: the mel front end on 2 s, and the encoder on sequences of several lengths.
    enc = load_encoder(args.encoder)
    seg = sample[16000:48000]
    mel = melspectrogram(seg)
    seqs = []
    for name, audio, start, frames in [("pyannote-sample", sample, 16000, 160), ("pyannote-sample", sample, 240000, 160), ("pyannote-sample", sample, 96000, 57), ("librivox-0870", libri, 32000, 237), ("pyannote-sample", sample, 400000, 1)]:
        wav = audio[start : start + 160 * frames]
        m = melspectrogram(wav)[:frames]
        with torch.no_grad():
            e = enc(torch.from_numpy(m)[None])[0].numpy()
        seqs.append({"file": name, "start": start, "samples": len(wav), "frames": frames, "input_sum": float(np.sum(wav, dtype=np.float64)), "embedding": rounded(e)})
    emb = {"mel": {"file": "pyannote-sample", "start": 16000, "samples": len(seg), "frames": mel.shape[0], "values": [float(v) for v in mel.reshape(-1)]}, "sequences": seqs}
    (OUT / "embedding.json").write_text(json.dumps(emb) + "\n")

    # DER cross-check.
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref_turns = []
    for line in (samples / "pyannote-sample" / "sample.rttm").read_text().splitlines():
        f = line.split()
        ref_turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    hyps = {
        "identical_renamed": [(s, e, {"speaker90": "A", "speaker91": "B"}[k]) for s, e, k in ref_turns],
        "shifted_0.2": [(s + 0.2, e + 0.2, k) for s, e, k in ref_turns],
        "one_speaker": [(6.5, 30.0, "X")],
        "missed_speaker": [(s, e, k) for s, e, k in ref_turns if k == "speaker90"],
        "extra_speaker": [(s, e, k) for s, e, k in ref_turns] + [(1.0, 3.0, "Z"), (12.0, 13.5, "Z")],
        "split_turns": [(s, (s + e) / 2, k + "a") for s, e, k in ref_turns] + [((s + e) / 2, e, k + "b") for s, e, k in ref_turns],
        "no_overlap": [(6.69, 7.12, "a"), (7.55, 8.35, "b"), (8.32, 10.02, "a"), (9.92, 11.03, "b"), (10.57, 14.7, "a"), (14.49, 17.92, "b"), (18.05, 21.49, "a"), (21.78, 28.5, "b"), (27.85, 30.0, "a")],
    }

    def ann(turns):
        a = Annotation()
        for i, (s, e, k) in enumerate(turns):
            a[Segment(s, e), i] = k
        return a

    ref = ann(ref_turns)
    cases = []
    for name, turns in hyps.items():
        for collar in (0.0, 0.25):
            metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)
            d = metric(ref, ann(turns), detailed=True)
            cases.append({"name": name, "collar": collar, "hypothesis": [[s, e, k] for s, e, k in turns], "der": d["diarization error rate"], "total": d["total"], "missed": d["missed detection"], "false_alarm": d["false alarm"], "confusion": d["confusion"]})
    (OUT / "der.json").write_text(json.dumps({"reference": [[s, e, k] for s, e, k in ref_turns], "cases": cases}, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
