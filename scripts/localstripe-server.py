#!/usr/bin/env python3
"""One private localstripe for one test server: bound to 127.0.0.1 on a free port (printed on
the first line of stdout), its state in memory only. Started as `localstripe`, it would bind
every interface on port 8420 and save its state after every write to /tmp/localstripe.pickle,
a file shared by every instance on the machine (see the crate notes); here nothing is saved and
nothing is loaded. It stops when its parent kills it (SIGTERM or SIGKILL).

Usage: <the python scripts/localstripe-venv prints> scripts/localstripe-server.py
"""
import logging
import socket

from localstripe import resources

# Persistence off: every instance keeps its own state, and leaves no file behind.
resources.Store.dump_to_disk = lambda self: None

from aiohttp import web  # noqa: E402
from localstripe import server  # noqa: E402


def main():
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    web.run_app(server.app, sock=listener, print=None, access_log=None,
                handle_signals=True)


if __name__ == "__main__":
    main()
