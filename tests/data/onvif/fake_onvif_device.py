"""A tiny ONVIF device + media endpoint for tests/discovery.rs, written by us (no real ONVIF
camera exists on the test machine). It answers from the recorded responses next to it and, on
every call but GetSystemDateAndTime, *checks* the WS-Security UsernameToken the way cameras do:
PasswordDigest = base64(sha1(nonce + created + password)), and Created within 60 s of the
device's clock, which runs CLOCK_OFFSET seconds ahead of the host's (so a client that ignores
GetSystemDateAndTime fails). With --http-digest it also demands RFC 7616 HTTP digest (MD5).
With --lying-media it advertises its media service on another host (a lying XAddr) and records
whether anything ever reaches the address where it listens as that other host.

usage: fake_onvif_device.py BIND_IP PORT USER PASSWORD STREAM_HOST [--http-digest]
       [--lying-media LIE_IP:LIE_PORT]

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
            return self.reply(200, ENV.format(
                "<tds:GetDeviceInformationResponse><tds:Manufacturer>PyCam</tds:Manufacturer><tds:Model>PyCam-1000</tds:Model>"
                "<tds:FirmwareVersion>1.0</tds:FirmwareVersion><tds:SerialNumber>PC0001</tds:SerialNumber>"
                "<tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>"))
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
            ch = "101" if tok == "Profile_1" else "102"
            return self.reply(200, ENV.format(
                "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://%s:%s@%s:8554/Streaming/Channels/%s</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
                "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>" % (user, password, stream_host, ch)))
        return self.reply(400, fault("ActionNotSupported", "no"))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


srv = Server((bind_ip, port), H)
print("ready", flush=True)
srv.serve_forever()
