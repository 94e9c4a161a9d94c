#!/usr/bin/python3
"""Camera simulator for Porchlight's integration tests: a GStreamer RTSP server on loopback.

Run it with Debian's interpreter (PyGObject and the GstRtspServer typelib live only there):

    /usr/bin/python3 crates/testkit/src/rtsp_camera.py --port 8554 \\
        --stream main:h264:640x360:15:15 --stream sub:h265 --audio main \\
        --user admin --password secret --auth digest

serves rtsp://127.0.0.1:8554/main and rtsp://127.0.0.1:8554/sub. Each stream is
`NAME:CODEC[:WxH[:FPS[:GOP]]]` (defaults 320x240, 15 fps, GOP = FPS frames, i.e. one
keyframe a second). CODEC is h264 (x264enc, zerolatency, no B-frames) or h265 (x265enc,
zerolatency, no B-frames). `--audio NAME` adds a mono 16 kHz AAC track to stream NAME as a
second RTP stream (RFC 3640 mpeg4-generic, as most IP cameras send it).

`--relay NAME:UDPPORT` (repeatable) serves rtsp://127.0.0.1:PORT/NAME from H.264 RTP that
another process sends to udp://127.0.0.1:UDPPORT, re-payloaded without transcoding (udpsrc !
rtph264depay ! h264parse ! rtph264pay). The benchmarks use it to serve a pre-encoded 1080p clip,
pushed with `ffmpeg -re -stream_loop -1 -i clip.ts -c copy -f rtp rtp://127.0.0.1:UDPPORT`, at
about 2 % of a core per stream instead of a live 1080p encoder's several cores. Packets sent
before the first client connects are dropped (the UDP port is bound when the medium is built).
With only `--relay` options there is no default test-pattern stream.

Media are shared: every client of one path sees the same encoder, like a real camera. The
pipeline starts (on a keyframe) with the first client and stops after the last one leaves.
A client that joins a running stream starts mid-GOP and must wait for the next keyframe,
as with most real cameras, and its arrival does not disturb the clients already watching
(see `behave_like_a_camera`).

Contract with the test harness (crates/testkit/src/camera.rs):
  * stdout: exactly one line `READY rtsp://127.0.0.1:PORT`, flushed, once the server
    listens (with `--port 0` the kernel picks PORT and the line reports it);
  * stderr: human diagnostics;
  * exit status: 0 after SIGTERM/SIGINT, 2 bad arguments, 3 missing GStreamer pieces,
    4 cannot listen on the port (usually: address in use).
"""

import argparse
import os
import re
import signal
import sys

EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_BIND = 4

APT_HINT = (
    "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad "
    "gstreamer1.0-libav gstreamer1.0-x"
)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def log(msg):
    print(f"rtsp_camera: {msg}", file=sys.stderr, flush=True)


def die(code, msg):
    log(msg)
    sys.exit(code)


try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
except (ImportError, ValueError) as e:
    die(
        EXIT_MISSING,
        f"MISSING GStreamer RTSP server for {sys.executable} ({e}); {APT_HINT}",
    )


class Relay:
    """`NAME:UDPPORT`: H.264 RTP arriving on a loopback UDP port, served as rtsp://…/NAME."""

    def __init__(self, spec):
        name, sep, port = spec.rpartition(":")
        if not sep or not name:
            raise ValueError(f"expected NAME:UDPPORT, got {spec!r}")
        if not NAME_RE.match(name):
            raise ValueError(f"relay name {name!r} must match {NAME_RE.pattern}")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"relay UDP port {port!r} is not 1..65535")
        self.name = name
        self.udp_port = int(port)


class Stream:
    def __init__(self, spec):
        parts = spec.split(":")
        if not 2 <= len(parts) <= 5:
            raise ValueError(f"expected NAME:CODEC[:WxH[:FPS[:GOP]]], got {spec!r}")
        self.name = parts[0]
        if not NAME_RE.match(self.name):
            raise ValueError(f"stream name {self.name!r} must match {NAME_RE.pattern}")
        self.codec = parts[1].lower()
        if self.codec not in ("h264", "h265"):
            raise ValueError(f"codec {parts[1]!r} is not h264 or h265")
        self.width, self.height = 320, 240
        if len(parts) > 2 and parts[2]:
            m = re.match(r"^(\d+)x(\d+)$", parts[2])
            if not m:
                raise ValueError(f"size {parts[2]!r} is not WxH")
            self.width, self.height = int(m.group(1)), int(m.group(2))
            # 4:2:0 chroma needs even dimensions.
            if self.width % 2 or self.height % 2 or not self.width or not self.height:
                raise ValueError(f"size {parts[2]!r} must be even and non-zero")
        self.fps = int(parts[3]) if len(parts) > 3 and parts[3] else 15
        self.gop = int(parts[4]) if len(parts) > 4 and parts[4] else self.fps
        if not 1 <= self.fps <= 120 or not 1 <= self.gop <= 10000:
            raise ValueError(f"fps {self.fps} or gop {self.gop} out of range")
        self.audio = False


def parse_args(argv):
    p = argparse.ArgumentParser(description="Loopback RTSP camera simulator (GStreamer).")
    p.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1; 0 = any free port")
    p.add_argument("--bind", default="127.0.0.1", help="listening address (a loopback address; default 127.0.0.1)")
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="NAME:CODEC[:WxH[:FPS[:GOP]]]",
        help="serve rtsp://127.0.0.1:PORT/NAME (repeatable; default main:h264)",
    )
    p.add_argument("--user", help="require this user name")
    p.add_argument("--password", help="require this password")
    p.add_argument("--auth", choices=("digest", "basic"), default="digest", help="auth scheme (default digest)")
    p.add_argument("--audio", action="append", default=[], metavar="NAME", help="add AAC audio to stream NAME (repeatable)")
    p.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="NAME:UDPPORT",
        help="serve rtsp://127.0.0.1:PORT/NAME from H.264 RTP sent to udp://127.0.0.1:UDPPORT (repeatable)",
    )
    p.add_argument("--bitrate", type=int, default=500, metavar="KBPS", help="video bitrate target (default 500)")
    p.add_argument(
        "--pattern",
        default="smpte",
        help="videotestsrc pattern (default smpte, scrolled so every frame changes)",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the parent process dies (so a killed test run leaves no camera behind)",
    )
    args = p.parse_args(argv)

    try:
        args.relays = [Relay(r) for r in args.relay]
        default = [] if args.relays else ["main:h264"]
        args.streams = [Stream(s) for s in (args.stream or default)]
    except ValueError as e:
        p.error(str(e))
    names = [s.name for s in args.streams]
    if len(set(names + [r.name for r in args.relays])) != len(names) + len(args.relays):
        p.error(f"duplicate stream name in {names + [r.name for r in args.relays]}")
    udp_ports = [r.udp_port for r in args.relays]
    if len(set(udp_ports)) != len(udp_ports):
        p.error(f"duplicate relay UDP port in {udp_ports}")
    for a in args.audio:
        if a not in names:
            p.error(f"--audio {a}: no such stream (have {names})")
        next(s for s in args.streams if s.name == a).audio = True
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if not 0 <= args.port <= 65535:
        p.error("--port out of range")
    if not 16 <= args.bitrate <= 100000:
        p.error("--bitrate out of range (16..100000 kbps)")
    return args


def have(element):
    return Gst.ElementFactory.find(element) is not None


def aac_encoder():
    # voaacenc (gstreamer1.0-plugins-bad) takes S16 mono directly; avenc_aac
    # (gstreamer1.0-libav) is the fallback. Both are in Debian's main archive.
    if have("voaacenc"):
        return "voaacenc bitrate=32000"
    if have("avenc_aac"):
        return "avenc_aac bitrate=32000"
    return None


def check_elements(streams, relays=()):
    needed = {
        "videotestsrc": "gstreamer1.0-plugins-base",
        "videoconvert": "gstreamer1.0-plugins-base",
        "rtph264pay": "gstreamer1.0-plugins-good",
        "rtph265pay": "gstreamer1.0-plugins-good",
        "h264parse": "gstreamer1.0-plugins-bad",
        "h265parse": "gstreamer1.0-plugins-bad",
    }
    if relays:
        needed["udpsrc"] = "gstreamer1.0-plugins-good"
        needed["rtph264depay"] = "gstreamer1.0-plugins-good"
    codecs = {s.codec for s in streams}
    if "h264" in codecs:
        needed["x264enc"] = "gstreamer1.0-plugins-ugly"
    if "h265" in codecs:
        needed["x265enc"] = "gstreamer1.0-plugins-bad"
    if any(s.audio for s in streams):
        needed.update(
            {
                "audiotestsrc": "gstreamer1.0-plugins-base",
                "audioconvert": "gstreamer1.0-plugins-base",
                "aacparse": "gstreamer1.0-plugins-good",
                "rtpmp4gpay": "gstreamer1.0-plugins-good",
            }
        )
    missing = [f"{e} ({pkg})" for e, pkg in needed.items() if not have(e)]
    if any(s.audio for s in streams) and aac_encoder() is None:
        missing.append("voaacenc or avenc_aac (gstreamer1.0-plugins-bad or gstreamer1.0-libav)")
    if missing:
        die(EXIT_MISSING, f"MISSING GStreamer elements: {', '.join(missing)}; {APT_HINT}")


def launch_line(s, args):
    """The gst-launch description of one shared medium; pay0 = video, pay1 = audio."""
    overlay = ""
    # timeoverlay (pango, in gstreamer1.0-x) stamps the stream name and running time;
    # without it the moving pattern alone still makes every frame different.
    if have("timeoverlay"):
        overlay = f'timeoverlay text="{s.name}" halignment=left valignment=top font-desc="Sans 10" ! '
    video = (
        f"videotestsrc is-live=true pattern={args.pattern} horizontal-speed=2 ! "
        f"video/x-raw,width={s.width},height={s.height},framerate={s.fps}/1 ! "
        f"{overlay}videoconvert ! video/x-raw,format=I420 ! "
    )
    if s.codec == "h264":
        # zerolatency: no lookahead, no B-frames (most IP cameras send none, and decode
        # order = presentation order keeps the timestamps simple).
        video += (
            f"x264enc name=venc tune=zerolatency speed-preset=ultrafast threads=1 bframes=0 "
            f"bitrate={args.bitrate} key-int-max={s.gop} ! "
            "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        # pools/frame-threads=1: one worker thread, so x265 does not spread over every core
        # of a small CI box (measured: under 10% of a core at 640x360, 10 fps).
        video += (
            f"x265enc name=venc tune=zerolatency speed-preset=ultrafast bitrate={args.bitrate} "
            f'key-int-max={s.gop} option-string="bframes=0:pools=1:frame-threads=1" ! '
            "h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    audio = ""
    if s.audio:
        audio = (
            " audiotestsrc is-live=true wave=ticks volume=0.3 ! "
            "audio/x-raw,format=S16LE,rate=16000,channels=1 ! audioconvert ! "
            f"{aac_encoder()} ! aacparse ! rtpmp4gpay name=pay1 pt=97"
        )
    return f"( {video}{audio} )"


def relay_launch_line(r):
    """The gst-launch description of one relayed medium (pay0 = video, as for a camera)."""
    # buffer-size: a 1080p keyframe is ~100 RTP packets sent in one burst; the default socket
    # buffer (~200 KiB) can overflow while the pipeline is busy. The kernel caps it at
    # net.core.rmem_max.
    return (
        f"( udpsrc name=src address=127.0.0.1 port={r.udp_port} buffer-size=4194304 "
        'caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=H264" ! '
        "rtph264depay ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def behave_like_a_camera(_factory, media):
    """Keep a shared stream steady when another client joins, as a camera's encoder is.

    Left alone, GstRtspServer answers every PLAY that carries `Range: npt=0-` (ffmpeg sends
    one, as do most clients) with a flushing seek of the shared pipeline: the encoder restarts
    on a fresh keyframe, so the newcomer never sees a mid-GOP start and the clients already
    watching get an unscheduled keyframe. Answering the SEEKING query as "not seekable"
    (GstRTSPMedia then skips the seek) and dropping force-key-unit requests (RTCP PLI/FIR)
    keeps the encoder to its own GOP.
    """

    def on_query(_pad, info):
        if info.get_query().type == Gst.QueryType.SEEKING:
            # A fresh SEEKING query already says seekable=false; PyGObject holds an extra
            # reference, so the query is not writable and cannot be set here.
            return Gst.PadProbeReturn.HANDLED
        return Gst.PadProbeReturn.OK

    def on_event(_pad, info):
        event = info.get_event()
        if event.type == Gst.EventType.CUSTOM_UPSTREAM and event.has_name("GstForceKeyUnit"):
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    element = media.get_element()
    for name in ("pay0", "pay1"):
        pay = element.get_by_name(name)
        if pay is not None:
            pay.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, on_query)
    # A relay has no encoder: keyframes come when the sender sends them.
    venc = element.get_by_name("venc")
    if venc is not None:
        venc.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_UPSTREAM, on_event)


def setup_auth(server, args, factories):
    if args.user is None:
        return
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    if args.auth == "digest":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(args.user, args.password, token)
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    # No default token: an anonymous or wrongly authenticated request gets 401.
    server.set_auth(auth)
    role = Gst.Structure.new_from_string(
        "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    )
    for f in factories:
        f.add_role_from_structure(role)


def main(argv):
    args = parse_args(argv)
    Gst.init(None)
    check_elements(args.streams, args.relays)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = []
    for s in args.streams:
        line = launch_line(s, args)
        try:
            # Fail now, not at the first DESCRIBE, if the description is broken.
            Gst.parse_launch(line.strip("() "))
        except GLib.Error as e:
            die(EXIT_MISSING, f"bad pipeline for {s.name}: {e.message}: {line}")
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(line)
        f.set_shared(True)
        f.connect("media-configure", behave_like_a_camera)
        mounts.add_factory(f"/{s.name}", f)
        factories.append(f)
        log(
            f"stream /{s.name}: {s.codec} {s.width}x{s.height} {s.fps} fps gop {s.gop} "
            f"{args.bitrate} kbps{' +aac' if s.audio else ''}"
        )
    for r in args.relays:
        line = relay_launch_line(r)
        try:
            Gst.parse_launch(line.strip("() "))
        except GLib.Error as e:
            die(EXIT_MISSING, f"bad pipeline for relay {r.name}: {e.message}: {line}")
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(line)
        f.set_shared(True)
        f.connect("media-configure", behave_like_a_camera)
        mounts.add_factory(f"/{r.name}", f)
        factories.append(f)
        log(f"relay /{r.name}: H.264 RTP from udp://127.0.0.1:{r.udp_port}")
    setup_auth(server, args, factories)

    try:
        source = server.create_source(None)
    except GLib.Error as e:
        die(EXIT_BIND, f"cannot listen on {args.bind}:{args.port}: {e.message}")
    source.attach(None)
    port = server.get_bound_port()

    loop = GLib.MainLoop()

    def shutdown(reason):
        log(f"stopping ({reason})")
        # Close client connections so peers see the camera go away at once.
        server.client_filter(lambda _srv, _client: GstRtspServer.RTSPFilterResult.REMOVE)
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, shutdown, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, shutdown, "SIGINT")
    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent():
            if os.getppid() != parent:
                return shutdown("parent exited")
            return GLib.SOURCE_CONTINUE

        GLib.timeout_add(500, watch_parent)

    print(f"READY rtsp://{args.bind}:{port}", flush=True)
    loop.run()
    source.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
