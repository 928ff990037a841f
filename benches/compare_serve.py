#!/usr/bin/env python3
"""mica serve: throughput against concurrency on 10 s clips, in one run.

    python3 benches/compare_serve.py [--model tiny.en] [--precision f32] [--requests 24]

Starts `target/release/mica serve` on 127.0.0.1 (tasks vad,asr) twice: with --workers 2
--queue 8 (each invocation decodes alone; 8 clients are all admitted), then with --batch 8
(8 invocations at once, their Whisper windows decoded together). For 1, 2, 4 and 8
concurrent clients it sends
`--requests` POST /invocations of JFK's 11 s (each client sends its next request when its
last is answered) and prints requests per second, media seconds per second and the ratio
to one client of the first server, then the batched server's mean batch size. Every
answer must be 200.
"""

import argparse
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def post(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "audio/wav"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, json.loads(r.read())


def run_level(url, body, clients, requests):
    left = [requests]
    lock = threading.Lock()
    media = [0.0]
    errors = []

    def client():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                status, doc = post(url, body)
                with lock:
                    media[0] += doc["media"]["duration"]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    assert not errors, errors[:3]
    return wall, media[0]


def start_server(mica, args, extra):
    server = subprocess.Popen(
        [mica, "serve", "--host", "127.0.0.1", "--port", "0", "--tasks", "vad,asr",
         "--model", args.model, "--precision", args.precision, *extra],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "MICA_LOG": "info"},
    )
    addr = None
    for line in server.stderr:
        m = re.search(r"listening on ([0-9.:]+)", line)
        if m:
            addr = m.group(1)
            break
    assert addr, "the server did not say where it listens"
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    base = f"http://{addr}"
    while True:
        try:
            if urllib.request.urlopen(base + "/ping", timeout=2).status == 200:
                break
        except Exception:  # noqa: BLE001 - still loading
            time.sleep(0.1)
    return server, base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--requests", type=int, default=24)
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "mica-cli"], cwd=ROOT, check=True)
    mica = target / "release" / "mica"
    samples = Path(os.environ.get("MICA_SAMPLES", Path.home() / ".cache/mica/samples"))
    subprocess.run([mica, "models", "fetch", "jfk"], check=True, capture_output=True)
    body = (samples / "jfk" / "jfk.wav").read_bytes()
    print(f"mica serve --tasks vad,asr --model {args.model} --precision {args.precision}; "
          f"{args.requests} requests of jfk.wav (11 s) per level; ratios against one client "
          "of the first server")
    print("| server | clients | wall s | requests/s | media s/s | vs 1 client |")
    print("|---|---|---|---|---|---|")
    first = None
    configs = [
        ("--workers 2 (each alone)", ["--workers", "2", "--queue", "8"]),
        ("--batch 8 (windows batched)", ["--batch", "8", "--queue", "0"]),
    ]
    for name, extra in configs:
        server, base = start_server(mica, args, extra)
        try:
            url = base + "/invocations"
            post(url, body)  # warm-up
            for clients in (1, 2, 4, 8):
                wall, media = run_level(url, body, clients, args.requests)
                rps = args.requests / wall
                first = first or rps
                print(f"| {name} | {clients} | {wall:.1f} | {rps:.2f} | {media / wall:.1f} "
                      f"| {rps / first:.2f}x |")
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            batches = re.search(r"^mica_whisper_batches_total (\d+)", metrics, re.M)
            windows = re.search(r"^mica_whisper_batched_windows_total (\d+)", metrics, re.M)
            if batches and windows and int(batches.group(1)):
                print(f"|  | mean batch | {int(windows.group(1)) / int(batches.group(1)):.2f} "
                      "windows |  |  |  |")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
