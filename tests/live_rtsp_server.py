"""A real RTSP server on loopback for the live tests: GStreamer's rtsp-server, serving a
live test pattern as RTP/JPEG at rtsp://127.0.0.1:PORT/test over TCP and UDP.

Run with the system Python (python3-gi and gir1.2-gst-rtsp-server-1.0 live there):
    /usr/bin/python3 tests/live_rtsp_server.py PORT [PATTERN] [WIDTHxHEIGHT] [USER:PASSWORD]
Prints 'ready' once it listens; stops on SIGTERM. The size defaults to 128x96. With
USER:PASSWORD (the password may hold ':' or '@') only that user may play the stream (HTTP
basic authentication, as IP cameras do).
"""
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def require_login(server, factory, login: str) -> None:
    user, password = login.split(":", 1)
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    factory.add_role_from_structure(Gst.Structure.from_string(
        "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])


def main() -> int:
    port = sys.argv[1]
    pattern = sys.argv[2] if len(sys.argv) > 2 else "ball"
    width, height = (int(v) for v in (sys.argv[3] if len(sys.argv) > 3 else "128x96").split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( videotestsrc is-live=true pattern={pattern} ! video/x-raw,format=I420,width={width},"
                       f"height={height},framerate=25/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    if len(sys.argv) > 4:
        require_login(server, factory, sys.argv[4])
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
