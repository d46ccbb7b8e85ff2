"""Where calibrations live: one JSON file per camera and bundle under the state directory,
`<state>/calibration/<camera>/<bundle SHA, 16 hex>.json`, written atomically (a crash leaves
the old file or the new one, never half of one). A calibration of another bundle is never
read for this one: the SHA is in the path and checked inside."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from monitor.alerts.calibration import Calibration, CalibrationError

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class CalibrationStore:
    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "calibration"

    def path(self, camera: str, bundle_sha: str) -> Path:
        return self.root / _SAFE.sub("_", camera) / f"{bundle_sha[:16]}.json"

    def load(self, camera: str, bundle_sha: str) -> Calibration | None:
        """The camera's calibration for this bundle, None when there is none; a file that
        cannot be read raises CalibrationError naming it."""
        path = self.path(camera, bundle_sha)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{path}: cannot read it ({exc}); delete it or calibrate the camera again") from exc
        cal = Calibration.from_dict(data, source=str(path))
        if cal.bundle_sha != bundle_sha:
            raise CalibrationError(f"{path}: field 'bundle_sha' names another bundle ({cal.bundle_sha[:16]}...); "
                                   f"delete it or calibrate the camera again")
        if cal.camera != camera:
            raise CalibrationError(f"{path}: field 'camera' is {cal.camera!r}, not {camera!r}")
        return cal

    def save(self, cal: Calibration) -> Path:
        path = self.path(cal.camera, cal.bundle_sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(cal.to_dict(), indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path
