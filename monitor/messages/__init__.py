"""What leaves the monitor: the ZeroMQ publisher (the message contract), the event store,
and the tools around them (health judged from a status, Prometheus metrics, systemd notices).

Ground package: imports none of the other monitor packages (pyzmq, prometheus_client for
metrics.py, and the standard library)."""
