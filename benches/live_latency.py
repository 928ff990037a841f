#!/usr/bin/env python3
"""mica live: caption delay behind a real recording played in real time, and its text.

    python3 benches/live_latency.py [--seconds 180] [--model tiny.en] [--step 0.5]
                                    [--input REC.wav] [--mica target/release/mica]

The recording (default: the first `--seconds` of the long English set, written by
`cargo run --release -p mica-testdata --example write`) is sent by `ffmpeg -re` as MPEG-TS
to a loopback UDP port, which `mica live udp://...` reads, as it would a broadcaster's
contribution feed. The words' true times come from the offline transcript of the same
audio (`mica transcribe --word-timestamps`, beam 5).

For every offline word matched in the live output:
- final delay: when the `final` event that settled it reached this script, minus the moment
  its audio was sent (sender start + the word's end);
- partial delay: the same for the first `partial` or `final` event that showed it.
It prints p50/p95/max of both, the settled text's WER against the offline transcript, how
far the settled words' times are from the offline ones (drift), and mica live's memory at
the start and the end (RSS).
"""

import argparse
import difflib
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def norm(text):
    return re.sub(r"[^a-z0-9']", "", text.lower())


def words_of(text):
    return [w for w in (norm(t) for t in text.split()) if w]


def wer(ref, hyp):
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round((len(v) - 1) * p))]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--step", type=float, default=0.5)
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--input", help="a recording (default: the long English set)")
    ap.add_argument("--mica", default=str(ROOT / "target/release/mica"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mica-live-bench-"))
    source = args.input
    if source is None:
        subprocess.run(
            ["cargo", "run", "--release", "-q", "-p", "mica-testdata", "--example", "write", "--", str(work)],
            cwd=ROOT, check=True,
        )
        source = str(work / "long-english.wav")
    rec = work / "rec.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", source, "-t", str(args.seconds), "-ac", "1", "-ar", "16000", str(rec)],
        check=True,
    )

    threads = ["--threads", str(args.threads)] if args.threads else []
    offline = json.loads(subprocess.run(
        [args.mica, "-q", "transcribe", str(rec), "--model", args.model, "--word-timestamps"] + threads,
        check=True, capture_output=True, text=True,
    ).stdout)
    ref = [w for s in offline["transcript"]["segments"] for w in s["words"] if norm(w["text"])]

    port = free_port()
    url = f"udp://127.0.0.1:{port}?timeout=4000000&fifo_size=1000000&overrun_nonfatal=1"
    live = subprocess.Popen(
        [args.mica, "-q", "live", url, "--model", args.model, "--step", str(args.step),
         "--beam-size", str(args.beam_size), "--format", "json"] + threads,
        stdout=subprocess.PIPE, text=True,
    )
    events = []
    listening = threading.Event()

    def reader():
        for line in live.stdout:
            t = time.monotonic()
            e = json.loads(line)
            events.append((t, e))
            if e.get("state") == "listening":
                listening.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    if not listening.wait(120):
        raise SystemExit("mica live did not start")
    rss_start = rss_mb(live.pid)
    t0 = time.monotonic()
    sender = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-i", str(rec), "-c:a", "aac", "-b:a", "128k",
         "-muxdelay", "0", "-muxpreload", "0", "-flush_packets", "1",
         "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
    )
    rss_peak = rss_start
    while sender.poll() is None:
        time.sleep(1.0)
        rss_peak = max(rss_peak, rss_mb(live.pid))
    rss_end = rss_mb(live.pid)
    live.wait(timeout=120)
    th.join(timeout=10)

    finals = []  # (recv, word)
    shown = []  # (recv, word) of partials and finals
    for t, e in events:
        if e["event"] in ("final", "partial"):
            for w in e["words"]:
                shown.append((t - t0, w))
                if e["event"] == "final":
                    finals.append((t - t0, w))
    hyp = [norm(w["text"]) for _, w in finals]
    refn = [norm(w["text"]) for w in ref]
    sm = difflib.SequenceMatcher(a=refn, b=hyp, autojunk=False)
    final_delay, partial_delay, drift = [], [], []
    for block in sm.get_matching_blocks():
        for k in range(block.size):
            rw = ref[block.a + k]
            recv, lw = finals[block.b + k]
            final_delay.append(recv - rw["end"])
            drift.append(lw["end"] - rw["end"])
            first = min(
                (r for r, w in shown if norm(w["text"]) == norm(rw["text"]) and abs(w["start"] - rw["start"]) < 1.0),
                default=recv,
            )
            partial_delay.append(min(first, recv) - rw["end"])
    settled = " ".join(w["text"] for _, w in finals)
    offline_text = " ".join(s["text"] for s in offline["transcript"]["segments"])
    w = wer(words_of(offline_text), words_of(settled))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    print(f"CPU: {model_name}, {os.cpu_count()} threads; model {args.model}, step {args.step} s, "
          f"beam {args.beam_size}; {args.seconds:.0f} s played in real time")
    print(f"words: {len(ref)} offline, {len(finals)} settled, {len(final_delay)} matched")
    print("| delay behind the audio | p50 | p95 | max |")
    print("|---|---|---|---|")
    for name, v in (("partial (first shown)", partial_delay), ("final (settled)", final_delay)):
        print(f"| {name} | {pct(v, 0.5):.2f} s | {pct(v, 0.95):.2f} s | {max(v, default=float('nan')):.2f} s |")
    print(f"settled text vs offline transcript: WER {100 * w:.2f}%")
    print(f"word end drift vs offline: p50 {pct(drift, 0.5):+.2f} s, p95 |drift| "
          f"{pct([abs(d) for d in drift], 0.95):.2f} s; first half {pct(drift[: len(drift) // 2], 0.5):+.2f} s, "
          f"second half {pct(drift[len(drift) // 2:], 0.5):+.2f} s")
    print(f"mica live RSS: {rss_start:.0f} MB at start, {rss_end:.0f} MB at the end, peak {rss_peak:.0f} MB")
    statuses = [e.get("state") for _, e in events if e["event"] == "status"]
    print(f"status events: {statuses}")


if __name__ == "__main__":
    main()
