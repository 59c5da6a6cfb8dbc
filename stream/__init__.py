"""Real-time video stream classifier: source → capture → queue → inference → render → sinks."""

import os

# OpenCV and its FFmpeg backend print their own warnings straight to stderr (a refused connection,
# a damaged macroblock), which would bury the tool's one-line errors. They must be silenced before
# cv2 is first imported; set these variables yourself to see them again.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
