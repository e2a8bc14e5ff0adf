"""A guard for child processes: every internet connection and name lookup made from Python, loopback included,
is logged, and one to anything but loopback is refused.

It is a ``sitecustomize`` module with a ``sys.addaudithook`` hook, so it sees ``socket.connect`` and
``getaddrinfo`` however a library makes its socket (httpx, urllib, the hub client); native code that opens
sockets without Python is outside its view.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

_SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys
    _log = os.environ["RERANKFORGE_TEST_NETLOG"]
    def _audit(event, args):
        if event == "socket.connect" and isinstance(args[1], tuple):
            what = repr(args[1])
        elif event == "socket.getaddrinfo":
            what = repr(args[:2])
        else:
            return
        with open(_log, "a") as fh:
            fh.write(event + " " + what + "\\n")
        if event == "socket.connect" and str(args[1][0]) not in {"127.0.0.1", "::1"}:
            raise ConnectionRefusedError("network blocked by test")
    sys.addaudithook(_audit)
    """
)


def guarded_env(folder: Path, root: Path) -> tuple[dict[str, str], Path]:
    """Environment variables that load the guard into a child Python, and the log it writes."""
    guard = folder / "netguard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    log = folder / "net.log"
    log.write_text("")
    env = {
        "PYTHONPATH": os.pathsep.join([str(guard), str(root)]),
        "RERANKFORGE_TEST_NETLOG": str(log),
        # CI=true (or NNCF_CI) would switch OpenVINO's and NNCF's telemetry off by itself: the child must show
        # that rerankforge does it
        "CI": "",
        "NNCF_CI": "",
    }
    return env, log
