"""A Ray the run starts on this machine listens on loopback only: no port of it is open to the network."""

import ipaddress
import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.conftest import ROOT, wait_for_lines

pytestmark = pytest.mark.slow
MODEL = ["--model", "efficientnet_lite0", "--backend", "onnxruntime", "--no-dashboard"]


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as gRPC binds a dual-stack socket
    return (mapped or address).is_loopback


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket that the process and its descendants listen on."""
    found = []
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue  # ended meanwhile
    return found


@pytest.mark.timeout(300)
def test_the_gcs_raylet_workers_and_agents_of_a_local_ray_bind_loopback_only(long_avi, tmp_path):
    preds = tmp_path / "p.jsonl"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "--source", str(long_avi), "--loop", *MODEL,
                             "--cache-dir", str(tmp_path / "cache"), "--engine", "ray", "--predictions", str(preds)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_lines(proc, preds, 10, timeout=200)  # Serve, the replica and the stream actor are all up
        sockets = listening(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names and len(sockets) >= 6, sockets
    exposed = [s for s in sockets if not is_loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"
