"""A real RTSP server for tests/test_rtsp.py: GStreamer's gst-rtsp-server through PyGObject.

    python3 tests/rtsp_server.py CLIP PORT

Serves CLIP (MPEG-4 part 2 in MP4, as OpenCV writes it) at rtsp://127.0.0.1:PORT/clip in real
time, one shared stream, and prints "ready" once it listens. SIGUSR1 pauses the stream (the
session and its sockets stay open, nothing is sent: a camera whose encoder hung); SIGUSR2 plays
it again. It runs under a Python that has `gi` (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good), not in the project's virtual env.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    clip, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( filesrc location={clip} ! qtdemux ! mpeg4videoparse config-interval=-1 "
        "! rtpmp4vpay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    medias: list[GstRtspServer.RTSPMedia] = []
    factory.connect("media-configure", lambda _factory, media: medias.append(media))
    server.get_mount_points().add_factory("/clip", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")

    def set_state(state: Gst.State) -> bool:
        for media in medias:
            media.set_pipeline_state(state)
        print(f"state {state.value_nick}", flush=True)
        return True  # keep the handler

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, set_state, Gst.State.PAUSED)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, set_state, Gst.State.PLAYING)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
