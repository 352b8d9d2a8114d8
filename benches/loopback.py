"""What the Python benchmark drivers share (benches/fleet/run.py, benches/shield/run.py): the
binary under test, free loopback ports, waiting for a process to listen, percentiles, and a
`nats-server -js` of their own."""

import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TOLLGATE_BIN", os.path.join(ROOT, "target/release/tollgate"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, proc, timeout=20):
    """Until 127.0.0.1:`port` accepts; exits if `proc` (when given) dies or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} not listening on {port} within {timeout} s")


def percentile(values, p):
    """The `p`th percentile of `values` (nearest rank); NaN when there are none."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def start_nats(store, cpu=None):
    """`nats-server -js` on a free port with its store under `store`, optionally pinned to
    `cpu`; returns (process, port, binary)."""
    binary = next(
        p for p in ("/usr/sbin/nats-server", shutil.which("nats-server")) if p and os.path.exists(p)
    )
    port = free_port()
    cmd = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, "nats-server", proc)
    return proc, port, binary
