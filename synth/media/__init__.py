"""Media I/O: video decode/encode (PyAV, ffmpeg) and atomic file writes."""
