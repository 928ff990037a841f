"""The Python package against real recordings: every call, every input form, every bad
input, and the same results as the CLI."""

import json
import os
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

import mica

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = Path(os.environ.get("MICA_SAMPLES", Path.home() / ".cache/mica/samples"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CLI = TARGET / "release" / "mica"


def sample(asset, name):
    path = SAMPLES / asset / name
    if not path.exists():
        subprocess.run([CLI, "models", "fetch", asset], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def analyzer():
    return mica.Analyzer(tasks=["vad", "asr", "diarize"])


def samples_of(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def text(analysis):
    return " ".join(s["text"].strip() for s in analysis.transcript["segments"])


def test_analyze_equals_the_cli(analyzer):
    jfk = sample("jfk", "jfk.wav")
    got = analyzer.analyze(jfk).to_dict()
    out = subprocess.run(
        [CLI, "analyze", jfk, "--tasks", "vad,asr,diarize", "-q"], check=True, capture_output=True
    )
    want = json.loads(out.stdout)
    for key in ("media", "transcript", "speech", "speakers", "parts", "warnings"):
        assert got.get(key) == want.get(key), key
    assert "ask not what your country can do for you" in text(analyzer.analyze(jfk)).lower()


def test_bytes_and_numpy_give_the_same_words(analyzer):
    jfk = sample("jfk", "jfk.wav")
    from_path = analyzer.analyze(str(jfk))
    from_bytes = analyzer.analyze(jfk.read_bytes())
    from_samples = analyzer.analyze(samples_of(jfk))
    assert text(from_bytes) == text(from_path)
    assert text(from_samples) == text(from_path)
    assert from_bytes.media["source"] == "-"
    assert from_samples.speakers == from_path.speakers
    # float64 and int16 arrays are converted; a list is not media.
    assert text(analyzer.analyze(samples_of(jfk).astype(np.float64))) == text(from_path)


def test_every_format_and_attribute(analyzer):
    a = analyzer.analyze(sample("jfk", "jfk.wav"))
    assert a.to_srt().startswith("1\n00:00:00")
    assert a.to_vtt().startswith("WEBVTT")
    assert "SPEAKER_00" in a.to_text()
    assert a.to_rttm().startswith("SPEAKER ")
    assert json.loads(a.to_json()) == a.to_dict()
    assert a.speech and a.speakers and a.transcript["language"] == "en"
    assert a.shots is None and a.warnings == []
    assert a.timings["total"] > 0
    with pytest.raises(mica.OptionsError, match="shots"):
        a.to_edl()
    assert "transcript" in repr(a)


def test_single_task_calls_and_video():
    jfk = sample("jfk", "jfk.wav")
    transcript = mica.transcribe(jfk)
    assert "ask not" in " ".join(s["text"] for s in transcript["segments"]).lower()
    assert all("words" in s for s in transcript["segments"])
    speech = mica.vad(jfk)
    assert speech and all(r["end"] > r["start"] for r in speech)
    conversation = sample("pyannote-sample", "sample.wav")
    turns = mica.diarize(conversation)
    out = subprocess.run(
        [CLI, "analyze", conversation, "--tasks", "diarize", "-q"], check=True, capture_output=True
    )
    assert turns == json.loads(out.stdout)["speakers"]
    assert len({t["speaker"] for t in turns}) >= 2
    video = sample("opencv-video", "Megamind.avi")
    shots = mica.shots(video)
    assert len(shots["shots"]) > 1
    analysis = mica.Analyzer(tasks=["shots"]).analyze(video.read_bytes())
    assert analysis.to_csv().startswith("Scene Number,")
    assert "FCM:" in analysis.to_edl()
    # Shots of an audio file: a result with a warning, not an error.
    audio = mica.Analyzer(tasks=["shots"]).analyze(jfk)
    assert audio.shots is None and any("no video" in w for w in audio.warnings)


def test_bad_inputs_raise_their_exception(analyzer, tmp_path):
    # Bytes are named as bytes, not by the temporary file the engine copied them to.
    with pytest.raises(mica.MediaError, match="^the media bytes: ") as bad:
        analyzer.analyze(os.urandom(50_000))
    assert "mica-input-" not in str(bad.value)
    with pytest.raises(mica.MediaError, match="^the media bytes: "):
        analyzer.analyze(b"")
    with pytest.raises(mica.MediaError):
        analyzer.analyze(tmp_path / "missing.wav")
    (tmp_path / "notes.txt").write_text("not media\n" * 100)
    with pytest.raises(mica.MediaError):
        analyzer.analyze(tmp_path / "notes.txt")
    with pytest.raises(mica.InputError, match="1-D"):
        analyzer.analyze(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(mica.InputError, match="finite"):
        analyzer.analyze(np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(mica.InputError):
        analyzer.analyze(12345)
    with pytest.raises(mica.OptionsError, match="ocr"):
        mica.Analyzer(tasks=["ocr"])
    with pytest.raises(mica.OptionsError):
        mica.Analyzer(tasks=[])
    with pytest.raises(mica.UnknownModelError, match="no-such-model"):
        mica.Analyzer(tasks=["asr"], model="no-such-model")
    with pytest.raises(mica.OptionsError):
        mica.Analyzer(precision="f7")
    with pytest.raises(mica.OptionsError):
        mica.Analyzer(tasks=["asr"], beam_size=0)
    with pytest.raises(mica.OptionsError):
        mica.Analyzer(device="tpu")
    # Every exception is a MicaError.
    assert issubclass(mica.UnknownModelError, mica.OptionsError)
    for e in (mica.MediaError, mica.InputError, mica.OptionsError, mica.ModelError,
              mica.DeviceError, mica.CancelledError):
        assert issubclass(e, mica.MicaError)
    # Silence is a result, not an error.
    quiet = analyzer.analyze(np.zeros(16000 * 2, dtype=np.float32))
    assert quiet.transcript["segments"] == [] and quiet.speech == []


def test_the_gil_is_released_while_models_run(analyzer):
    jfk = sample("jfk", "jfk.wav")
    ticks = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    before = ticks[0]
    t = time.perf_counter()
    analyzer.analyze(jfk)
    seconds = time.perf_counter() - t
    done.set()
    counter.join()
    # A thread holding the GIL for the whole analysis would leave the counter at a
    # handful of ticks (the interpreter's switch interval is 5 ms, the sleeps 1 ms).
    assert ticks[0] - before > seconds * 100, (ticks[0] - before, seconds)


def test_plan_run_part_merge(analyzer, tmp_path):
    # 71 s: the pyannote sample, JFK, the pyannote sample again; two parts.
    pieces = [samples_of(sample("pyannote-sample", "sample.wav")), samples_of(sample("jfk", "jfk.wav"))]
    audio = np.concatenate([pieces[0], pieces[1], pieces[0]])
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    plan = analyzer.plan(path, parts=2)
    assert len(plan["parts"]) == 2
    results = [analyzer.run_part(plan, i) for i in reversed(range(2))]
    merged = analyzer.merge(plan, results)
    # The parts meet in JFK's pause after "Americans": the words on both sides are kept,
    # and none twice. (Whether tiny.en hears "ask not" or only "ask" before that pause
    # depends on where its window opens, on the whole file as on the part.)
    words = text(merged).lower()
    assert words.count("fellow americans") == 1, words
    assert words.count("what you can do for your country") == 1, words
    assert len({t["speaker"] for t in merged.speakers}) >= 2
    with pytest.raises(mica.InputError):
        analyzer.merge(plan, results[:1])
    with pytest.raises(mica.InputError):
        analyzer.run_part({"not": "a plan"}, 0)


def test_module_level_fan_out(tmp_path):
    pieces = [samples_of(sample("pyannote-sample", "sample.wav")), samples_of(sample("jfk", "jfk.wav"))]
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        audio = np.concatenate([pieces[0], pieces[1], pieces[0]])
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    p = mica.plan(path, parts=2, tasks=["vad", "asr"], beam_size=1)
    assert p["tasks"] == ["vad", "asr"] and len(p["parts"]) == 2
    # The plan travels as JSON; its options come with it.
    p = json.loads(json.dumps(p))
    merged = mica.merge(p, [mica.run_part(p, i) for i in range(2)])
    assert "my fellow americans" in text(merged).lower() and merged.speakers is None
    whole = mica.Analyzer(tasks=["vad", "asr"], beam_size=1, part_seconds=35.5, workers=1).analyze(path)
    assert text(merged) == text(whole)
