"""The wheel carries what the worker needs at run time (the README offers `pip install` of it)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_event_schema(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path)], check=True)
    (wheel,) = tmp_path.glob("callpulse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "callpulse/schemas/event-v1.schema.json" in names
    packaged = zipfile.ZipFile(wheel).read("callpulse/schemas/event-v1.schema.json")
    assert packaged == (ROOT / "schemas" / "event-v1.schema.json").read_bytes()
