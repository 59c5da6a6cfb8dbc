"""Real-time video stream classifier: source → capture → queue → inference → render → sinks."""
