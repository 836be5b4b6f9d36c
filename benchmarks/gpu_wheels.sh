#!/usr/bin/env bash
# Wheels that benchmarks/gpu_suite.py needs on the lent GPU machine and that its image lacks
# (CPython 3.12, manylinux x86_64): Optuna and Ray Tune with their missing dependencies.
# Everything else the project imports (torch, numpy, pandas, scipy, scikit-learn, PyYAML,
# tqdm, pillow, pyarrow, fsspec, requests, protobuf, msgpack, click, filelock, attrs, ...)
# is already in that image.
#
# The Ray wheel (~79 MB) alone is over the 64 MiB a device call may carry, so it is
# repacked without what a local Ray Tune run never loads: the Java jars (32 MB packed),
# RLlib, Serve, Ray LLM and the dashboard's web client (the dashboard is off in nas).
# The repacked wheel keeps its name and a RECORD that lists exactly what it holds.
#
#   bash benchmarks/gpu_wheels.sh            # into .whl/ (git-ignored through .git/info/exclude)
#
# Versions are the ones the project's tests pass with on the development machines.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # exactly these wheels: two versions of one package would stop the install there
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
WHEELS=(
  optuna==5.0.0 alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0
  ray==2.60.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  tensorboardX==2.6.5
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"

python3 - "$DEST" <<'EOF'
"""Repack the Ray wheel without the parts a local Ray Tune run never loads."""
import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/build/")
for wheel in sorted(Path(sys.argv[1]).glob("ray-*.whl")):
    with zipfile.ZipFile(wheel) as src:
        names = [n for n in src.namelist() if not n.startswith(DROP)]
        if len(names) == len(src.namelist()):
            continue  # repacked already
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        tmp = wheel.with_suffix(".tmp")
        rows = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for name in names:
                if name == record:
                    continue
                info = src.getinfo(name)
                data = src.read(name)
                dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append(f"{name},sha256={digest},{len(data)}")
            rows.append(f"{record},,")
            dst.writestr(src.getinfo(record), "\n".join(rows) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, wheel)
    print(f"repacked {wheel.name}: {len(names)} files kept")
EOF

ls -l "$DEST"
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "wheels: $((total / 1024 / 1024)) MiB ($total bytes); working tree: $((tree / 1024)) KiB;" \
     "together $(((total + tree) / 1024 / 1024)) MiB of the 64 MiB a device call may carry"
