"""One listening socket on every address, IPv4 and IPv6 alike, for the health server and the web app.

Kubelets and load balancers on IPv6-only or dual-stack clusters connect to the pod's IPv6 address, so
binding 0.0.0.0 alone fails every probe there. A `[::]` socket with IPV6_V6ONLY off also accepts
IPv4 (as ::ffff:a.b.c.d); where the kernel has no IPv6 at all, 0.0.0.0 is used instead.
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 128
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


def dual_stack_socket(port: int) -> socket.socket:
    """A non-blocking listening TCP socket on `port` of every local address (raises OSError, e.g. EADDRINUSE)."""
    try:
        sock = _bound(socket.AF_INET6, "::", port)
    except OSError as err:
        if err.errno not in _NO_IPV6:
            raise
        sock = _bound(socket.AF_INET, "0.0.0.0", port)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _bound(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
