"""Video in: camera, RTSP, file and synthetic sources (one reader thread per camera), 16-frame
snippets, and the one preprocessing path (crops and patch grids) shared with offline extraction.

Ground package: imports none of the other monitor packages (numpy, OpenCV, Pillow only)."""
