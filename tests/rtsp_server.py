"""A real RTSP server on 127.0.0.1 for the tests: Debian's GStreamer RTSP server, H.264 over RTP.

Run by the system Python (`/usr/bin/python3`, which has PyGObject and GStreamer's introspection data; the
project's venv has neither), as a subprocess the tests start, kill and restart on the same port:

    /usr/bin/python3 tests/rtsp_server.py PORT FRAMES_DIR [USER:PASSWORD]

Mounts, each 640x480 at 30 fps, H.264 (x264, zero latency, a keyframe every 30 frames), shared between clients:
- `/pan`: the JPEGs `FRAMES_DIR/frame%05d.jpg` played in a loop (a real photograph panned and zoomed, each
  frame stamped with its number: tests.cameras.stamp);
- `/pan-tcp`, `/pan-udp`: the same, offered over that RTP transport only (a client asking for the other
  one is refused);
- `/frozen`: the first JPEG repeated for ever (GStreamer's `imagefreeze`: a frozen picture), encoded at a
  constant quantiser, so that each keyframe decodes as the one before (a frozen encoder repeating itself);
- `/frozen-abr`: the same with x264's default rate control, each keyframe quantised afresh;
- `/black`: `videotestsrc pattern=black` (a covered lens);
- `/secure`: `/pan` behind basic authentication with USER:PASSWORD, when given;
- `/pan720`: `/pan` scaled to 1280x720 (scripts/bench_capacity.py's cameras: one encode for every client).

Prints `listening PORT` once the server is attached. Everything else goes to stderr.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

CAPS = "video/x-raw,width=640,height=480,framerate=30/1"
X264 = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30"
PAY = "rtph264pay name=pay0 pt=96 config-interval=1"
# A frozen encoder sends the same picture: at a constant quantiser every keyframe of a still picture decodes alike.
# With x264's default rate control (`/frozen-abr`) each keyframe is quantised afresh and decodes up to ~1.3
# levels of 255 apart on average from the frame before (see tests/test_rtsp.py).
RATE = {"frozen": "pass=quant quantizer=23"}
ANONYMOUS, USER = "anonymous", "user"


def launch(frames: str, kind: str, caps: str = CAPS) -> str:
    pictures = f'multifilesrc location={frames}/frame%05d.jpg loop=true caps="image/jpeg,framerate=30/1"'
    source = {
        "pan": f"{pictures} ! jpegdec ! videoconvert",
        "frozen": f"filesrc location={frames}/frame00000.jpg ! jpegdec ! videoconvert ! imagefreeze",
        "frozen-abr": f"filesrc location={frames}/frame00000.jpg ! jpegdec ! videoconvert ! imagefreeze",
        "black": "videotestsrc pattern=black",
    }[kind]
    return f"( {source} ! videoscale ! videorate ! {caps} ! {X264} {RATE.get(kind, '')} ! {PAY} )"


def factory(pipeline: str, play: list[str], protocols=None) -> GstRtspServer.RTSPMediaFactory:
    """A shared mount that the roles in `play` may play. Every role may see it: a role that may not play it
    gets 401 with a challenge, which a client answers with its credentials (not 404, which ends the session)."""
    made = GstRtspServer.RTSPMediaFactory()
    made.set_launch(pipeline)
    made.set_shared(True)
    if protocols is not None:
        made.set_protocols(protocols)
    for role in (ANONYMOUS, USER):
        allowed = "true" if role in play else "false"
        permissions, _ = Gst.Structure.from_string(
            f"{role}, media.factory.access=(boolean)true, media.factory.construct=(boolean){allowed}")
        made.add_role_from_structure(permissions)
    return made


def main() -> None:
    port, frames = sys.argv[1], sys.argv[2]
    credentials = sys.argv[3] if len(sys.argv) > 3 else None
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    auth = GstRtspServer.RTSPAuth()
    anonymous = GstRtspServer.RTSPToken()
    anonymous.set_string("media.factory.role", ANONYMOUS)
    auth.set_default_token(anonymous)  # a client without credentials may play the open mounts only
    if credentials:
        user, _, password = credentials.partition(":")
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", USER)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    mounts = server.get_mount_points()
    anyone = [ANONYMOUS, USER]
    mounts.add_factory("/pan", factory(launch(frames, "pan"), anyone))
    mounts.add_factory("/pan-tcp", factory(launch(frames, "pan"), anyone, GstRtsp.RTSPLowerTrans.TCP))
    mounts.add_factory("/pan-udp", factory(launch(frames, "pan"), anyone, GstRtsp.RTSPLowerTrans.UDP))
    mounts.add_factory("/pan720", factory(launch(frames, "pan", CAPS.replace("640", "1280").replace("480", "720")),
                                          anyone))
    mounts.add_factory("/frozen", factory(launch(frames, "frozen"), anyone))
    mounts.add_factory("/frozen-abr", factory(launch(frames, "frozen-abr"), anyone))
    mounts.add_factory("/black", factory(launch(frames, "black"), anyone))
    if credentials:
        mounts.add_factory("/secure", factory(launch(frames, "pan"), [USER]))
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print(f"listening {port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
