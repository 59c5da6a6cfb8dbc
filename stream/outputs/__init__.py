"""Where annotated frames go: each output kind registered once (video file, predictions log, window, preview)."""
