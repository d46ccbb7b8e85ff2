"""What leaves the monitor: the ZeroMQ publisher (the message contract), the event store,
and the tools around them.

Ground package: imports none of the other monitor packages (pyzmq and the standard library)."""
