"""scripts/demo as a newcomer meets it: a port already taken is named
before anything starts (runs without nginx: the check comes first)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading

from tests.helpers import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_refuses_a_port_another_server_holds(tmp_path):
    """A newcomer's port 8081 already taken by another web server: the demo
    stops before starting anything, naming the port and the variable to set."""
    busy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=busy.serve_forever, daemon=True)
    thread.start()
    port = busy.server_address[1]
    try:
        env = dict(os.environ, DEMO_DIR=str(tmp_path / "demo"), DEMO_PORT=str(free_port()), SIM_PORT=str(port),
                   BOX_PORT=str(free_port()), DEMO_PYTHON=sys.executable)
        env.pop("MOODLE_SYNC_AGENT_CONFIG", None)
        result = subprocess.run([str(ROOT / "scripts" / "demo")], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60)
    finally:
        busy.shutdown()
        busy.server_close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} is already in use" in result.stderr and "SIM_PORT=" in result.stderr, result.stderr
    assert not (tmp_path / "demo").exists()  # nothing was started or written
