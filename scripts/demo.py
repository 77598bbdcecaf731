#!/usr/bin/env python3
"""envoy-persist demo: three backends and Envoy with envoy/http-cookie.yaml.

Run by `make run` (which builds the module and sets ENVOY_BIN and PERSIST_WASM):
    ENVOY_BIN=... PERSIST_WASM=target/wasm32-wasip1/release/envoy_persist.wasm python scripts/demo.py

Starts backends a, b, c on 127.0.0.1:8081-8083 (tests/backend.py), then Envoy on :10000 with
admin on 127.0.0.1:9901, prints what to curl, and stops everything on Ctrl-C.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "envoy" / "http-cookie.yaml"
MODULE_IN_CONFIG = "target/wasm32-wasip1/release/envoy_persist.wasm"
BACKENDS = [("a", 8081), ("b", 8082), ("c", 8083)]
LISTEN, ADMIN = 10000, 9901


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(port, path, cookie=None, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read().decode(errors="replace")
    finally:
        conn.close()


def wait_for(what, check, timeout, procs):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for name, p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2)")
    args = ap.parse_args()

    envoy_bin = os.environ.get("ENVOY_BIN") or shutil.which("envoy")
    if not envoy_bin:
        sys.exit("ENVOY_BIN is not set and no envoy on PATH (use `make run`)")
    module = Path(os.environ.get("PERSIST_WASM") or MODULE_IN_CONFIG)
    module = module if module.is_absolute() else ROOT / module
    if not module.is_file():
        sys.exit(f"module not found: {module} (run `make build`)")
    busy = [p for p in [LISTEN, ADMIN] + [p for _, p in BACKENDS] if port_busy(p)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy} (another demo running?)")

    workdir = Path(tempfile.mkdtemp(prefix="envoy-persist-demo-"))
    config = CONFIG
    if module.resolve() != (ROOT / MODULE_IN_CONFIG).resolve():
        # The example names the module relative to the repository root; point it at PERSIST_WASM.
        config = workdir / CONFIG.name
        config.write_text(CONFIG.read_text().replace(MODULE_IN_CONFIG, str(module)))

    procs = []

    def stop(*_):
        for name, p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for name, p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        procs.clear()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        for name, port in BACKENDS:
            log = open(workdir / f"backend-{name}.log", "wb")
            p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "backend.py"), "--port", str(port),
                                  "--name", name], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # Ctrl-C reaches the demo, which stops them
            procs.append((f"backend {name}", p))
        for name, port in BACKENDS:
            wait_for(f"backend {name}", lambda: get(port, "/healthz")[0] == 200, 10, procs)

        envoy_log = workdir / "envoy.log"
        log = open(envoy_log, "wb")
        envoy = subprocess.Popen([envoy_bin, "-c", str(config), "--concurrency", str(args.concurrency),
                                  "--disable-hot-restart"], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(("envoy", envoy))
        try:
            wait_for("Envoy", lambda: get(ADMIN, "/ready")[0] == 200, 30, procs)
            wait_for("backend health checks",
                     lambda: get(ADMIN, "/clusters")[2].count("::health_flags::healthy") == len(BACKENDS), 15, procs)
        except RuntimeError:
            print(envoy_log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise

        pids = ", ".join(f"{n}: kill {p.pid}" for (n, p) in ((n[len('backend '):], p) for n, p in procs
                                                                if n.startswith("backend")))
        status, headers, _ = get(LISTEN, "/")
        cookie = next((v.split(";")[0] for k, v in headers if k.lower() == "set-cookie"), "persist=...")
        served = next((v for k, v in headers if k.lower() == "x-backend"), "?")
        print(f"""
envoy-persist demo is running
  Envoy      http://127.0.0.1:{LISTEN}/   (config {CONFIG.relative_to(ROOT)}, log {envoy_log})
  admin      http://127.0.0.1:{ADMIN}/
  backends   {', '.join(f'{n} = 127.0.0.1:{p}' for n, p in BACKENDS)}   (each answers x-backend: NAME)

1. Get a cookie (no cookie: round robin picks a backend, the filter adds Set-Cookie):
     curl -i http://127.0.0.1:{LISTEN}/
   A first request just got backend {served} and:  Set-Cookie: {cookie}; ...

2. Send it back: the same backend answers, every time, on any connection:
     for i in 1 2 3 4 5; do curl -s -b '{cookie}' http://127.0.0.1:{LISTEN}/ -o /dev/null -D - | grep x-backend; done

3. The filter's counters (hit, miss, new, rebind, invalid, error):
     curl -s 'http://127.0.0.1:{ADMIN}/stats?filter=wasmcustom.persist'
     curl -s http://127.0.0.1:{ADMIN}/stats/prometheus | grep '^persist_'

4. Tamper with the cookie (change one character): it is ignored, counted `invalid`, and replaced.

5. Failover: stop the backend your cookie names ({pids}); within a second
   Envoy's health check takes it out and the same cookie gets another backend and a new cookie.

Ctrl-C stops Envoy and the backends.
""", flush=True)
        reported = set()
        while True:  # until Ctrl-C, or until Envoy dies
            if envoy.poll() is not None:
                print(f"Envoy exited with code {envoy.returncode}; stopping.", file=sys.stderr)
                print(envoy_log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            for (name, port), (_, p) in zip(BACKENDS, procs):
                if p.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"backend {name} is down; start it again with:\n"
                          f"  python3 tests/backend.py --port {port} --name {name}", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main() or 0)
