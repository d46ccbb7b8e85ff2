"""The terminal dashboard: state built from messages only, its rendering with rich, and the app
that feeds it from the engine or from a ZeroMQ socket.

Knows only the message contract: imports monitor.messages and nothing of video/, model/ or alerts/."""
