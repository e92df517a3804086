"""Bytes sent to storage per byte of events logged, and peak memory: tbpipe's sink vs
tensorboardX's own gs:// writer, side by side in one run against gcp-storage-emulator.

    python benchmarks/bench_log_sink.py [--steps 20000] [--seconds 60] [--flush-secs 5]

Each writer runs in its own process, at the same time, on the same paced workload
(``--steps`` steps of two scalars, a 256-value histogram every 100 steps, spread over
``--seconds``), flushing every ``--flush-secs``. Each process counts the HTTP request bodies
it sends (by wrapping google-auth's AuthorizedSession) and reports its peak RSS (VmHWM).
Bytes logged = the size of the event data that ends up in the bucket.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

WRITERS = {"sink": "tbpipe sink (segments)", "native": "tensorboardX gs:// writer"}


def rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def count_request_bodies() -> dict:
    from google.auth.transport.requests import AuthorizedSession

    counter = {"bytes": 0, "requests": 0}
    original = AuthorizedSession.request

    def request(self, method, url, data=None, *args, **kwargs):
        if method in ("POST", "PUT") and data is not None:
            counter["bytes"] += len(data) if isinstance(data, (bytes, str)) else 0
            counter["requests"] += 1
        return original(self, method, url, data, *args, **kwargs)

    AuthorizedSession.request = request
    return counter


def open_writer(kind: str, uri: str, flush_secs: int):
    if kind == "sink":
        from tbpipe.components.common.tensorboard.sink import remote_writer

        return remote_writer(uri, flush_secs=flush_secs, close_timeout=120)
    from tensorboardX import SummaryWriter

    return contextlib.closing(SummaryWriter(logdir=uri, flush_secs=flush_secs))


def child(kind: str, uri: str, steps: int, seconds: float, flush_secs: int) -> None:
    import numpy as np

    counter = count_request_bodies()
    rng = np.random.default_rng(0)
    baseline, slowest, started = 0, 0.0, time.monotonic()
    with open_writer(kind, uri, flush_secs) as writer:
        for step in range(steps):
            t = time.monotonic()
            writer.add_scalar("loss", float(rng.random()), step)
            writer.add_scalar("accuracy", float(rng.random()), step)
            if step % 100 == 0:
                writer.add_histogram("weights", rng.normal(size=256), step)
            slowest = max(slowest, time.monotonic() - t)
            if step == 100:  # imports done, writer open and warm
                baseline = rss_kb("VmRSS")
            if step % 50 == 49:
                time.sleep(max(0.0, started + (step + 1) * seconds / steps - time.monotonic()))
    print(json.dumps({"kind": kind, "sent": counter["bytes"], "requests": counter["requests"],
                      "peak_kb": rss_kb("VmHWM"), "baseline_kb": baseline,
                      "seconds": time.monotonic() - started, "slowest_add": slowest}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def emulator(bucket: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host",
                             "127.0.0.1", "--port", str(port), "--in-memory", "-q",
                             "--default-bucket", bucket], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with contextlib.suppress(OSError), urllib.request.urlopen(endpoint + "/", timeout=1):
            break
        time.sleep(0.1)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()


def bucket_bytes(bucket: str, prefix: str) -> tuple[int, int]:
    from google.cloud import storage

    blobs = list(storage.Client().list_blobs(bucket, prefix=prefix))
    return sum(b.size for b in blobs), len(blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--flush-secs", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "URI"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.steps, args.seconds, args.flush_secs)
    bucket = "bench"
    with emulator(bucket) as endpoint:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        procs = {kind: subprocess.Popen(
            [sys.executable, __file__, "--child", kind, f"gs://{bucket}/{kind}/run",
             "--steps", str(args.steps), "--seconds", str(args.seconds),
             "--flush-secs", str(args.flush_secs)], stdout=subprocess.PIPE, env=env,
            cwd=tempfile.gettempdir()) for kind in WRITERS}
        results = {}
        for kind, proc in procs.items():
            out, _ = proc.communicate()
            assert proc.returncode == 0, f"{kind} failed"
            results[kind] = json.loads(out.decode().strip().splitlines()[-1])
            results[kind]["logged"], results[kind]["objects"] = bucket_bytes(bucket, kind + "/")
    print(f"{args.steps} steps over {args.seconds:g} s, flush every {args.flush_secs} s, "
          "both writers at once against gcp-storage-emulator\n")
    print(f"{'writer':28} {'logged MB':>9} {'sent MB':>9} {'sent/logged':>11} {'requests':>8} "
          f"{'peak RSS MB':>11} {'growth MB':>9} {'slowest add ms':>14}")
    for kind, r in results.items():
        print(f"{WRITERS[kind]:28} {r['logged'] / 1e6:9.2f} {r['sent'] / 1e6:9.2f} "
              f"{r['sent'] / r['logged']:11.3f} {r['requests']:8d} {r['peak_kb'] / 1024:11.1f} "
              f"{(r['peak_kb'] - r['baseline_kb']) / 1024:9.1f} {r['slowest_add'] * 1e3:14.1f}")


if __name__ == "__main__":
    main()
