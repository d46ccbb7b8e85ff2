"""What one machine can do with one bundle, measured in one run (`run_monitor.py bench`):
the machine's peak, the backbone against it and against PyTorch, the heads, preprocessing,
the engine against the inference bound, latency and the cameras a box holds at 25 fps.

A module per measurement; each has KEYS (name -> what it means) and `measure(bench)`, and
`registry.MEASUREMENTS` lists them in the order they run (a new measurement is a module and
one line there). May import monitor's video, model, messages, alerts, config and the engine;
never the commands or the dashboard. PyTorch is reached only in a subprocess (torch_twin)."""
