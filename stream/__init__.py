"""Real-time video stream classifier: source → capture → queue → inference → render → sinks."""

import os
import sys

# OpenCV and its FFmpeg backend print their own warnings straight to stderr (a refused connection,
# a damaged macroblock), which would bury the tool's one-line errors. They must be silenced before
# cv2 is first imported; set these variables yourself to see them again.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# OpenCV serialises every FFmpeg open behind one process-wide lock, so a dead camera's open (up to its 10 s
# timeout) would hold up every other: a stream added beside it, another stream's reconnect. FFmpeg itself has
# been thread-safe since 4.0 (the wheels bundle a recent one): let opens run side by side. OpenCV warns of it at
# every open, so only where its log is off (cv2 not imported before this package, as in run_stream.py).
if "cv2" not in sys.modules:
    os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
