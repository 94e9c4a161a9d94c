"""mDNS/DNS-SD publisher for tests/discovery.rs: the PyPI `zeroconf` package (an implementation
we did not write) announcing one `_rtsp._tcp` service, as doorbells that speak only mDNS do.

usage: mdns_publisher.py INSTANCE IP PORT [SECONDS]

Runs inside a test network namespace only, bound to IP's interface. Prints "ready" once
registered, then serves until killed (or SECONDS elapse)."""
import socket
import sys
import time

from zeroconf import IPVersion, ServiceInfo, Zeroconf

instance, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 300.0
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
info = ServiceInfo(
    "_rtsp._tcp.local.",
    instance + "._rtsp._tcp.local.",
    addresses=[socket.inet_aton(ip)],
    port=port,
    properties={"path": "/live/main", "model": "PyBell-2"},
    server="pybell.local.",
)
zc.register_service(info)
print("ready", flush=True)
try:
    time.sleep(seconds)
finally:
    zc.unregister_service(info)
    zc.close()
