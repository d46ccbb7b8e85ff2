"""From scores to alerts: the per-camera policy (hysteresis, minimum duration, cooldown,
smoothing, snapshots), and where they come, calibration and localisation.

May import monitor.model (to re-score patches through the bundle's graphs) and monitor.config."""
