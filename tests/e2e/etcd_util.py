"""End-to-end harness for the etcd mirror (SPEC 2.4): real etcd v3 members on 127.0.0.1.

    from etcd_util import etcd, etcd_cluster, mirror_patch  # fixtures and the config patch

`etcd` is one member, `etcd_cluster` three (static bootstrap); both run under the test's
tmp_path (data dirs and logs) and are killed at teardown, whatever happened. Each member
can be killed (SIGKILL), restarted on its own data dir and ports, paused (SIGSTOP: the
kernel still accepts connections, nothing answers: a hung member) and resumed.

The test client speaks etcd's JSON gateway (POST /v3/kv/range, base64 keys and values,
stdlib urllib), asking the members that are running in turn. Environment: ETCD_BIN
(default `etcd` on PATH, Debian's etcd-server 3.4), ETCDCTL_BIN (default `etcdctl`).
Only 127.0.0.1 is ever contacted; every wait is bounded.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import LOCAL, _cluster, deadline_loop, free_port

# Short raft timings (the test members are on one host) and little logging.
FAST_FLAGS = ("--heartbeat-interval", "100", "--election-timeout", "1000",
              "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")


def etcd_bin():
    return os.environ.get("ETCD_BIN") or shutil.which("etcd")


def etcdctl_bin():
    return os.environ.get("ETCDCTL_BIN") or shutil.which("etcdctl")


def _b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def _unb64(text):
    return base64.b64decode(text or "")


def prefix_end(prefix):
    """etcd's range_end for "every key starting with `prefix`"."""
    b = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


class KV:
    """One key as etcd holds it: key and value as str, lease id (0: none), revisions."""

    def __init__(self, doc):
        self.key = _unb64(doc.get("key")).decode(errors="replace")
        self.value = _unb64(doc.get("value")).decode(errors="replace")
        self.lease = int(doc.get("lease", 0) or 0)
        self.create_revision = int(doc.get("create_revision", 0) or 0)
        self.mod_revision = int(doc.get("mod_revision", 0) or 0)
        self.version = int(doc.get("version", 0) or 0)

    def __repr__(self):
        return f"KV({self.key!r}={self.value!r}, lease={self.lease})"


class EtcdMember:
    def __init__(self, name, workdir):
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"{name}.data"
        self.log_path = workdir / f"{name}.log"
        self.proc = None
        self.paused = False
        self.cluster_args = ()  # set by EtcdCluster

    @property
    def client_url(self):
        return f"http://{LOCAL}:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://{LOCAL}:{self.peer_port}"

    def command(self):
        return [etcd_bin(), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                *self.cluster_args, *FAST_FLAGS]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def running(self):
        """Alive and not paused: the member answers."""
        return self.alive() and not self.paused

    def spawn(self):
        assert not self.alive(), f"{self.name} already running"
        log = open(self.log_path, "ab")
        log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
        log.flush()
        # Its own process group: a SIGINT to pytest does not reach it, teardown kills it.
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.paused = False

    def health(self, timeout=1.0):
        """GET /health: True when the member reports {"health": "true"} (it has a leader)."""
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=timeout) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout=20.0):
        for _ in deadline_loop(timeout, 0.05):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"etcd {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.health():
                return
        raise AssertionError(f"etcd {self.name} not healthy within {timeout}s:\n{self.log_tail()}")

    def start(self, timeout=20.0):
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def restart(self, timeout=20.0):
        """Starts it again on the same data dir and ports (after kill or stop)."""
        assert not self.alive(), f"{self.name} still running"
        return self.start(timeout)

    def kill(self):
        """SIGKILL: the member vanishes like a crashed host (its sockets are closed)."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.paused = False

    def stop(self):
        """SIGTERM (graceful), SIGKILL after 10 s."""
        if self.alive():
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.paused = False

    def pause(self):
        """SIGSTOP: connections are still accepted by the kernel, nothing is answered."""
        assert self.alive()
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    # JSON gateway ---------------------------------------------------------------------------
    def call(self, path, body, timeout=2.0):
        req = urllib.request.Request(f"{self.client_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def status(self):
        """/v3/maintenance/status: {"member_id": int, "leader": int, ...}."""
        doc = self.call("/v3/maintenance/status", {})
        return {"member_id": int(doc["header"]["member_id"]), "leader": int(doc.get("leader", 0) or 0),
                "raft_term": int(doc.get("raftTerm", doc.get("raft_term", 0)) or 0)}

    def __repr__(self):
        state = "paused" if self.paused else ("running" if self.alive() else "down")
        return f"EtcdMember({self.name}, client {self.client_port}, {state})"


class EtcdCluster:
    """One or more members bootstrapped together (static --initial-cluster)."""

    def __init__(self, workdir, size=1):
        assert etcd_bin(), "etcd not found: install Debian's etcd-server (3.4) or set ETCD_BIN"
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.members = [EtcdMember(f"etcd{i}", workdir) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"e2e-{uuid.uuid4().hex[:12]}"
        for m in self.members:
            m.cluster_args = ("--initial-cluster", initial, "--initial-cluster-state", "new",
                              "--initial-cluster-token", token)

    def __getitem__(self, i):
        return self.members[i]

    def __len__(self):
        return len(self.members)

    @property
    def ports(self):
        """Client ports of every member (the `etcd` cluster's endpoints in Envoy)."""
        return [m.client_port for m in self.members]

    @property
    def endpoints(self):
        return ",".join(m.client_url for m in self.members)

    def start(self, timeout=30.0):
        # All members first: a member of a new cluster is healthy only once a quorum is up.
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_healthy(timeout)
        return self

    def kill_all(self):
        for m in self.members:
            try:
                m.kill()
            except Exception:  # teardown: kill the others whatever happens
                pass

    def stop(self):
        for m in self.members:
            m.stop()

    def logs(self, n=20):
        return "\n".join(f"--- {m.name} ({m.log_path}) ---\n{m.log_tail(n)}" for m in self.members)

    # client ---------------------------------------------------------------------------------
    def call(self, path, body, timeout=2.0):
        """POSTs to the first running member that answers; raises the last error otherwise."""
        last = None
        for m in self.members:
            if not m.running():
                continue
            try:
                return m.call(path, body, timeout=timeout)
            except (OSError, ValueError) as exc:
                last = exc
        raise last or OSError("no etcd member running")

    def range(self, key, range_end=None, timeout=2.0):
        body = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        doc = self.call("/v3/kv/range", body, timeout=timeout)
        return [KV(kv) for kv in doc.get("kvs", [])]

    def get(self, key, timeout=2.0):
        """The KV at `key`, None when absent."""
        kvs = self.range(key, timeout=timeout)
        return kvs[0] if kvs else None

    def get_prefix(self, prefix, timeout=2.0):
        """{key: KV} of every key under `prefix`."""
        return {kv.key: kv for kv in self.range(prefix, prefix_end(prefix), timeout=timeout)}

    def put(self, key, value, lease=0, timeout=2.0):
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.call("/v3/kv/put", body, timeout=timeout)

    def lease_ttl(self, lease, timeout=2.0):
        """(remaining TTL, granted TTL) of a lease in seconds; remaining is -1 once it expired."""
        doc = self.call("/v3/lease/timetolive", {"ID": str(lease)}, timeout=timeout)
        return int(doc.get("TTL", -1)), int(doc.get("grantedTTL", 0) or 0)

    def leader(self):
        """The running member that is the raft leader, None when none is known."""
        ids = {}
        leader_id = None
        for m in self.members:
            if not m.running():
                continue
            try:
                st = m.status()
            except (OSError, ValueError, KeyError):
                continue
            ids[st["member_id"]] = m
            leader_id = leader_id or st["leader"] or None
        return ids.get(leader_id)

    def wait_leader(self, exclude=None, timeout=15.0):
        """Waits until the running members agree on a leader (not `exclude`): that member."""
        for _ in deadline_loop(timeout, 0.1):
            ld = self.leader()
            if ld is not None and ld is not exclude and all(m.health() for m in self.members if m.running()):
                return ld
        raise AssertionError(f"no etcd leader within {timeout}s:\n{self.logs()}")

    def move_leader(self, member, timeout=15.0):
        """Makes `member` the raft leader (etcdctl move-leader), then waits until all agree."""
        if self.leader() is not member:
            self.ctl("move-leader", format(member.status()["member_id"], "x"), timeout=timeout)
        for _ in deadline_loop(timeout, 0.1):
            if self.leader() is member:
                return
        raise AssertionError(f"{member.name} not the leader {timeout}s after move-leader:\n{self.logs()}")

    def ctl(self, *args, timeout=10.0):
        """etcdctl (API v3) against the running members: its stdout (raises on failure)."""
        eps = ",".join(m.client_url for m in self.members if m.running())
        env = dict(os.environ, ETCDCTL_API="3")
        out = subprocess.run([etcdctl_bin(), "--endpoints", eps, "--dial-timeout", "1s",
                              "--command-timeout", f"{max(1, int(timeout) - 1)}s", *args],
                             capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)}: rc {out.returncode}: {out.stderr.strip()}")
        return out.stdout


def mirror_patch(ports, cluster="etcd"):
    """A patch for envoy_factory: the `etcd` cluster's endpoints become 127.0.0.1:<ports>."""
    ports = list(ports)

    def patch(cfg):
        c = _cluster(cfg, cluster)
        c["load_assignment"]["endpoints"] = [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": LOCAL, "port_value": p}}}}
            for p in ports]}]

    return patch


def _fixture(tmp_path, size, name):
    c = EtcdCluster(tmp_path / name, size=size)
    try:
        c.start()
        yield c
    finally:
        c.kill_all()


@pytest.fixture
def etcd(tmp_path):
    """One etcd member, healthy, on free 127.0.0.1 ports; killed at teardown (logs and data
    under tmp_path/etcd)."""
    yield from _fixture(tmp_path, 1, "etcd")


@pytest.fixture
def etcd_cluster(tmp_path):
    """Three etcd members (static bootstrap), healthy with a leader; killed at teardown (logs
    and data under tmp_path/etcd-cluster)."""
    yield from _fixture(tmp_path, 3, "etcd-cluster")
