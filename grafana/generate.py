"""Write grafana/dashboards/*.json from grafana/dashboards.py.

    python -m grafana.generate            # from the repository root (or: python grafana/generate.py)
    python -m grafana.generate --out DIR  # somewhere else (the test compares with the committed files)

Output is sorted and indented JSON, the same bytes for the same code: commit it with the change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "grafana"

from grafana.common import dumps  # noqa: E402
from grafana.dashboards import build_files  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "dashboards"


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted(build_files().items()):
        path = out / name
        path.write_text(dumps(data), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
