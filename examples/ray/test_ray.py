"""The Ray fan-out for real on a local cluster (127.0.0.1, 2 CPUs): three files (two
recordings of about two minutes and a 34 s film) each merged equal to `mica analyze`, a bad
file failing alone, and a worker killed mid-part whose part Ray runs again."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRIVER = HERE / "analyze_files.py"
SAMPLES = Path(os.environ.get("MICA_SAMPLES", Path.home() / ".cache/mica/samples"))
CLI = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "mica"
BIN = Path(sys.executable).parent
TASKS = "vad,asr,diarize,shots"
PART_SECONDS = "60"


def read(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def write(path, pieces):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(pieces).tobytes())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    subprocess.run([CLI, "models", "fetch"], check=True, capture_output=True)
    d = tmp_path_factory.mktemp("media")
    conversation, jfk = read(SAMPLES / "pyannote-sample/sample.wav"), read(SAMPLES / "jfk/jfk.wav")
    gap = np.zeros(16000, dtype="<i2")
    write(d / "conversation.wav", [conversation, gap, jfk, gap, conversation, gap, conversation, gap, jfk])
    readings = sorted((SAMPLES / "librivox").glob("*.wav")) + sorted((SAMPLES / "cards").glob("*.wav"))
    write(d / "readings.wav", [p for _ in range(3) for r in readings for p in (read(r), gap[:8000])])
    # A film of 34 s: the Megamind clip three times over (re-encoded, so the copies join).
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-stream_loop", "2", "-i", SAMPLES / "opencv-video/Megamind.avi",
         "-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac", "-b:a", "96k", "-y", d / "film.mp4"],
        check=True,
    )
    (d / "broken.mp4").write_bytes(os.urandom(300_000))
    return d


@pytest.fixture(scope="module")
def expected(files):
    """What `mica analyze` gives for each good file, cut as the plan cuts."""
    out = {}
    for name in ("conversation.wav", "readings.wav", "film.mp4"):
        run = subprocess.run(
            [CLI, "analyze", files / name, "--tasks", TASKS, "--part-seconds", PART_SECONDS,
             "--workers", "1", "-q"],
            check=True, capture_output=True,
        )
        out[Path(name).stem] = json.loads(run.stdout)
    return out


@pytest.fixture(scope="module")
def cluster():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(BIN / "ray")
    subprocess.run(
        [ray, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--include-dashboard=false", "--disable-usage-stats"],
        check=True, capture_output=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


def driver(cluster, out, inputs):
    return [sys.executable, DRIVER, "--address", cluster, "--out-dir", out, "--tasks", TASKS,
            "--part-seconds", PART_SECONDS, "--workers", "2", *inputs]


def same_as_analyze(out, expected, stem):
    got = json.loads((out / f"{stem}.analysis.json").read_text())
    want = expected[stem]
    text = lambda d: [s["text"] for s in d["transcript"]["segments"]]  # noqa: E731
    speakers = lambda d: len({t["speaker"] for t in d["speakers"]})  # noqa: E731
    assert got["parts"] == want["parts"], stem
    assert text(got) == text(want), stem
    assert speakers(got) == speakers(want), stem
    assert got.get("shots") == want.get("shots"), stem


def test_files_fan_out_and_equal_analyze(cluster, files, expected, tmp_path):
    inputs = [files / n for n in ("conversation.wav", "readings.wav", "film.mp4", "broken.mp4")]
    run = subprocess.run(driver(cluster, tmp_path, inputs), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    broken = report[str(files / "broken.mp4")]
    assert not broken["ok"] and "MediaError" in broken["error"]
    for stem in ("conversation", "readings", "film"):
        entry = next(v for k, v in report.items() if Path(k).stem == stem)
        assert entry["ok"], entry
        same_as_analyze(tmp_path, expected, stem)
    assert (tmp_path / "film.edl").exists() and (tmp_path / "conversation.srt").exists()
    assert report[str(files / "conversation.wav")]["parts"] == 2


def test_a_worker_killed_mid_part_is_run_again(cluster, files, expected, tmp_path):
    inputs = [files / "conversation.wav", files / "readings.wav"]
    proc = subprocess.Popen(driver(cluster, tmp_path, inputs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and proc.poll() is None:
        for pid in subprocess.run(["pgrep", "-f", "ray::MapWorker"], capture_output=True,
                                  text=True).stdout.split():
            try:
                utime = int(Path(f"/proc/{pid}/stat").read_text().split()[13])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            # Past loading the models (well under a second) and into a part.
            if utime > 300:
                os.kill(int(pid), signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=600)
    assert killed, "no worker was seen running a part"
    assert proc.returncode == 0, err[-3000:]
    for stem in ("conversation", "readings"):
        same_as_analyze(tmp_path, expected, stem)
