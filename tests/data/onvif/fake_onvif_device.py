"""A tiny ONVIF device + media endpoint for tests/discovery.rs, written by us (no real ONVIF
camera exists on the test machine). It answers from the recorded responses next to it and, on
every call but GetSystemDateAndTime, *checks* the WS-Security UsernameToken the way cameras do:
PasswordDigest = base64(sha1(nonce + created + password)), and Created within 60 s of the
device's clock, which runs CLOCK_OFFSET seconds ahead of the host's (so a client that ignores
GetSystemDateAndTime fails). With --http-digest it also demands RFC 7616 HTTP digest (MD5).
With --lying-media it advertises its media service on another host (a lying XAddr) and records
whether anything ever reaches the address where it listens as that other host.

usage: fake_onvif_device.py BIND_IP PORT USER PASSWORD STREAM_HOST [--http-digest]
       [--lying-media LIE_IP:LIE_PORT] [--stream-port N --stream-paths MAIN,SUB]
       [--serial S] [--open-device-info] [--no-capabilities] [--wsd ENDPOINT_REF]

--stream-port/--stream-paths: GetStreamUri names rtsp://STREAM_HOST:N/MAIN (first profile) and
  /SUB (second) — a GStreamer RTSP camera of crates/testkit — instead of the Hikvision-style
  defaults on port 8554. User info is still put in the URI, as some firmware does.
--serial: the SerialNumber GetDeviceInformation reports (default PC0001).
--open-device-info: answer GetDeviceInformation without a token (many cameras do).
--no-capabilities: answer GetCapabilities with ActionNotSupported (ONVIF 2.x-only firmware);
  GetServices then lists the media service.
--wsd ENDPOINT_REF: also answer unicast WS-Discovery Probes on BIND_IP:3702 with the recorded
  Hikvision ProbeMatch (probematch_hikvision.xml), its endpoint reference, XAddr and RelatesTo
  replaced (for networks without multicast: the gateway's unicast host probe).

Prints "ready" when listening. Each request line is logged to stdout ("call NAME ok|denied")."""
import base64
import datetime
import hashlib
import http.server
import os
import re
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK_OFFSET = 3600
bind_ip, port, user, password, stream_host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
http_digest = "--http-digest" in sys.argv
lying = None
if "--lying-media" in sys.argv:
    lying = sys.argv[sys.argv.index("--lying-media") + 1]


def opt(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


stream_port = opt("--stream-port")
stream_paths = (opt("--stream-paths") or "Streaming/Channels/101,Streaming/Channels/102").split(",")
serial = opt("--serial", "PC0001")
open_device_info = "--open-device-info" in sys.argv
no_capabilities = "--no-capabilities" in sys.argv
wsd_endpoint = opt("--wsd")
REALM, NONCE = "porchlight-fake", "3f2a9c0d7e"

NS = {
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
}
ENV = ('<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
       'xmlns:tt="{tt}" xmlns:tds="{tds}" xmlns:trt="{trt}"><env:Body>{{}}</env:Body></env:Envelope>').format(**NS)


def now():
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=CLOCK_OFFSET)


def fault(sub, reason):
    return ENV.format('<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:{}</env:Value>'
                      '</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{}</env:Text></env:Reason></env:Fault>'
                      .format(sub, reason)).replace('xmlns:trt=', 'xmlns:ter="http://www.onvif.org/ver10/error" xmlns:trt=')


def token_ok(body):
    m = lambda tag: re.search(r"<[\w-]*:?%s[^>]*>([^<]*)</" % tag, body)
    u, pw, nonce, created = m("Username"), m("Password"), m("Nonce"), m("Created")
    if not (u and pw and nonce and created) or u.group(1) != user:
        return False, "no token or wrong user"
    want = base64.b64encode(hashlib.sha1(base64.b64decode(nonce.group(1)) + created.group(1).encode()
                                         + password.encode()).digest()).decode()
    if want != pw.group(1):
        return False, "bad digest"
    t = datetime.datetime.strptime(created.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((t - now()).total_seconds()) > 60:
        return False, "Created %s is not camera time" % created.group(1)
    return True, ""


def digest_ok(header, method, path):
    if not header or not header.startswith("Digest "):
        return False
    p = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header[7:])}
    ha1 = hashlib.md5(("%s:%s:%s" % (user, REALM, password)).encode()).hexdigest()
    ha2 = hashlib.md5(("%s:%s" % (method, p.get("uri", ""))).encode()).hexdigest()
    want = hashlib.md5(("%s:%s:%s:%s:auth:%s" % (ha1, NONCE, p.get("nc"), p.get("cnonce"), ha2)).encode()).hexdigest()
    return p.get("username") == user and p.get("nonce") == NONCE and p.get("response") == want


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body, extra=None):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        op = re.search(r"<(?:\w+:)?(Get\w+)[ />]", body.split("Body", 1)[-1])
        name = op.group(1) if op else "?"
        if name == "GetSystemDateAndTime":
            t = now()
            print("call", name, "ok", flush=True)
            return self.reply(200, ENV.format(
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType>"
                "<tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>%d</tt:Hour>"
                "<tt:Minute>%d</tt:Minute><tt:Second>%d</tt:Second></tt:Time><tt:Date><tt:Year>%d</tt:Year>"
                "<tt:Month>%d</tt:Month><tt:Day>%d</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime>"
                "</tds:GetSystemDateAndTimeResponse>" % (t.hour, t.minute, t.second, t.year, t.month, t.day)))
        if name == "GetDeviceInformation" and open_device_info and "UsernameToken" not in body:
            print("call", name, "ok open", flush=True)
            return self.reply(200, device_information())
        if http_digest and not digest_ok(self.headers.get("Authorization"), "POST", self.path):
            print("call", name, "challenged", flush=True)
            return self.reply(401, "", {"WWW-Authenticate": 'Digest realm="%s", qop="auth", nonce="%s", algorithm=MD5' % (REALM, NONCE)})
        ok, why = token_ok(body)
        if not ok:
            print("call", name, "denied", why, flush=True)
            return self.reply(400, fault("NotAuthorized", "Sender not Authorized"))
        print("call", name, "ok", flush=True)
        here = "http://%s:%d" % (bind_ip, port)
        if name == "GetDeviceInformation":
            return self.reply(200, device_information())
        if name == "GetCapabilities" and no_capabilities:
            return self.reply(400, fault("ActionNotSupported", "GetCapabilities is not supported"))
        if name == "GetServices":
            return self.reply(200, ENV.format(
                "<tds:GetServicesResponse><tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>"
                "<tds:XAddr>%s/onvif/device_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace><tds:XAddr>%s/onvif/Media</tds:XAddr>"
                "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service></tds:GetServicesResponse>" % (here, here)))
        if name == "GetCapabilities":
            media = ("http://%s/onvif/Media" % lying) if lying else here + "/onvif/Media"
            return self.reply(200, ENV.format(
                "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Device><tt:XAddr>%s/onvif/device_service</tt:XAddr>"
                "</tt:Device><tt:Media><tt:XAddr>%s</tt:XAddr></tt:Media></tds:Capabilities></tds:GetCapabilitiesResponse>"
                % (here, media)))
        if name == "GetProfiles":
            with open(os.path.join(HERE, "getprofiles_hikvision.xml")) as f:
                return self.reply(200, f.read())
        if name == "GetStreamUri":
            tok = re.search(r"ProfileToken>([^<]*)<", body).group(1)
            path = stream_paths[0] if tok == "Profile_1" else stream_paths[-1]
            return self.reply(200, ENV.format(
                "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://%s:%s@%s:%s/%s</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
                "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
                % (user, password, stream_host, stream_port or "8554", path)))
        return self.reply(400, fault("ActionNotSupported", "no"))


def device_information():
    return ENV.format(
        "<tds:GetDeviceInformationResponse><tds:Manufacturer>PyCam</tds:Manufacturer><tds:Model>PyCam-1000</tds:Model>"
        "<tds:FirmwareVersion>1.0</tds:FirmwareVersion><tds:SerialNumber>%s</tds:SerialNumber>"
        "<tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>" % serial)


def wsd_responder(sock):
    with open(os.path.join(HERE, "probematch_hikvision.xml")) as f:
        template = f.read()
    while True:
        data, peer = sock.recvfrom(65536)
        text = data.decode("utf-8", "replace")
        if "Probe" not in text or "ProbeMatches" in text:
            continue
        mid = re.search(r"MessageID[^>]*>([^<]*)<", text)
        reply = (template
                 .replace("urn:uuid:54575a4e-4d31-3130-3530-bcbac2f06bc3", wsd_endpoint)
                 .replace("http://192.0.2.64/onvif/device_service", "http://%s:%d/onvif/device_service" % (bind_ip, port))
                 .replace("urn:uuid:0f0a7c5e-4a0b-4a76-9b3a-8f7f2c1d2e3f", mid.group(1) if mid else "urn:uuid:0"))
        print("wsd probe answered", flush=True)
        sock.sendto(reply.encode(), peer)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


if wsd_endpoint:
    import socket
    wsd_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wsd_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    wsd_sock.bind((bind_ip, 3702))
    threading.Thread(target=wsd_responder, args=(wsd_sock,), daemon=True).start()
srv = Server((bind_ip, port), H)
print("ready", flush=True)
srv.serve_forever()
