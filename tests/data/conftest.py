"""A local HTTP server for the download tests (the real dataset hosts are
out of reach here, and tests must not depend on the network anyway)."""

import contextlib
import functools
import http.server
import threading

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def serve_folder():
    """``with serve_folder(path) as base_url:`` serves ``path`` over HTTP on 127.0.0.1."""
    return _serve
