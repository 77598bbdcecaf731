#!/usr/bin/env python3
"""`make bench-hostcalls`: what one proxy-wasm host call costs Envoy (BENCHMARKS.md "What a
host call costs").

The probe module (crates/hostcall-cost: the no-op filter plus, per request, the host calls
its configuration names) runs in one Envoy per plan (`--concurrency 1`, the capability
restriction of bench/envoy/capabilities.yaml, no hand-off), all in front of the nginx of
`make bench`, measured in interleaved rounds with wrk. A call's price is the Envoy CPU per
request of its plan minus that of the empty plan (the no-op filter), divided by the number
of calls: the median over the rounds. Envoy CPU (its /proc utime + stime over the
measurement) moves far less with the other processes on the host than req/s does.

Environment: BENCH_SECONDS (default 4), BENCH_ROUNDS (default 3), BENCH_PORT_BASE (default
17500), ENVOY_BIN, PROBE_WASM (default target/wasm32-wasip1/release/hostcall_cost.wasm).
Nothing here asserts timing.
"""

import importlib.util
import os
import statistics
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
os.environ.setdefault("BENCH_PORT_BASE", "17500")
_spec = importlib.util.spec_from_file_location("bench_run", os.path.join(BENCH, "run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

SECONDS = run.env_num("BENCH_SECONDS", 4, float)
ROUNDS = run.env_num("BENCH_ROUNDS", 3)
PROBE = os.path.abspath(os.environ.get("PROBE_WASM") or os.path.join(
    ROOT, "target/wasm32-wasip1/release/hostcall_cost.wasm"))

# plan id -> (probe configuration, calls per request, what is priced)
PLANS = {
    "none": ("", 0, "the no-op filter (the baseline)"),
    "get_header": ("get_header=64", 64, "get a request header the request has (`host`)"),
    "get_absent_header": ("get_absent_header=64", 64, "get a request header the request lacks"),
    "set_header": ("set_header=32", 32, "replace a request header (Envoy then re-chooses the route)"),
    "remove_absent_header": ("remove_absent_header=32", 32, "remove a request header the request lacks"),
    "get_absent_response_header": ("get_absent_response_header=64", 64, "get a response header the response lacks"),
    "get_property": ("get_property=32", 32, "get the property `upstream.address` (response)"),
    "set_property": ("set_property=32", 32, "set a filter state key (response; the access-log state)"),
    "time": ("time=64", 64, "get the current time"),
    "shared_get": ("shared_get=64", 64, "get a 370-byte shared-data value (a table slot)"),
}


def config(plan, port, admin_port):
    return config_for(PLANS[plan][0], port, admin_port)


def config_for(plan_text, port, admin_port):
    """An Envoy configuration running the probe with `plan_text` (e.g. "get_header=8")."""
    lines = run.snippet("filters-hostcall.yaml", PROBE_WASM=PROBE, PLAN=plan_text)
    return run.envoy_config_with(lines, port, admin_port)


def main():
    if not os.path.exists(PROBE):
        sys.exit(f"{PROBE} not built: cargo build --release --target wasm32-wasip1 -p hostcall-cost")
    envoy_bin = os.environ.get("ENVOY_BIN") or run.subprocess.run(
        [os.path.join(ROOT, "scripts", "envoy-bin.sh")], capture_output=True, text=True, check=True).stdout.strip()
    run_dir = os.path.join(BENCH, "out", "hostcalls")
    run.shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    procs = run.Procs(run_dir)
    try:
        run.start_backends(procs, run_dir, run.shutil.which("nginx") or "/usr/sbin/nginx")
        envoys = {}
        for i, plan in enumerate(PLANS):
            port, admin_port = run.PORT_BASE + 100 + i, run.PORT_BASE + 200 + i
            path = os.path.join(run_dir, f"envoy-{plan}.yaml")
            with open(path, "w") as f:
                f.write(config(plan, port, admin_port))
            proc = procs.start(f"envoy-{plan}", [envoy_bin, "-c", path, "--concurrency", "1",
                                                 "--disable-hot-restart", "--log-level", "warn"])
            envoys[plan] = dict(name=plan, port=port, admin=admin_port, proc=proc, pid=proc.pid,
                                log=os.path.join(run_dir, f"envoy-{plan}.log"))
        for e in envoys.values():
            run.wait_ready(e)
            run.run_wrk(run.wrk_cmd(e["port"], 1, "report.lua"))
        cpu = {p: [] for p in PLANS}
        for r in range(ROUNDS):
            for plan, e in envoys.items():
                before = run.proc_cpu_s(e["pid"])
                res = run.run_wrk(run.wrk_cmd(e["port"], SECONDS, "report.lua"))
                used = run.proc_cpu_s(e["pid"]) - before
                cpu[plan].append(used * 1e6 / max(res["requests"], 1))
            run.log(f"round {r + 1}/{ROUNDS}: " + ", ".join(f"{p} {v[-1]:.1f}" for p, v in cpu.items()))
        print(f"\n| host call | µs per call (median of {ROUNDS} rounds) | calls per request |")
        print("|---|--:|--:|")
        print(f"| (the no-op filter: Envoy CPU per request) | {statistics.median(cpu['none']):.1f} | 0 |")
        for plan, (_, n, what) in PLANS.items():
            if n == 0:
                continue
            per = [(c - b) / n for c, b in zip(cpu[plan], cpu["none"])]
            print(f"| {what} | {statistics.median(per):.2f} | {n} |")
        print(f"\nload average at the end: {run.loadavg()}")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
