"""WS-Discovery responder for tests/discovery.rs: the PyPI `wsdiscovery` package (an
implementation we did not write) publishing one ONVIF NetworkVideoTransmitter.

usage: wsd_responder.py NAME XADDR [SECONDS]

Runs inside a test network namespace only. Prints "ready" once published, then serves until
killed (or SECONDS elapse)."""
import sys
import time

from wsdiscovery import QName, Scope
from wsdiscovery.publishing import ThreadedWSPublishing

name, xaddr = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 300.0
pub = ThreadedWSPublishing()
pub.start()
pub.publishService(
    types=[
        QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn"),
        QName("http://www.onvif.org/ver10/device/wsdl", "Device", "tds"),
    ],
    scopes=[
        Scope("onvif://www.onvif.org/name/" + name.replace(" ", "%20")),
        Scope("onvif://www.onvif.org/hardware/PyCam-1000"),
        Scope("onvif://www.onvif.org/location/porch"),
        Scope("onvif://www.onvif.org/Profile/Streaming"),
    ],
    xAddrs=[xaddr],
)
print("ready", flush=True)
try:
    time.sleep(seconds)
finally:
    pub.stop()
