#!/usr/bin/env bash
# Creates the virtualenv that the long "model families" suite needs: PyTorch and
# torchvision (to export real model families to ONNX, scripts/export_families.py)
# plus the pinned onnx / onnxruntime / numpy of scripts/requirements.txt (for the
# reference outputs).
#
#   bash scripts/install-torch.sh
#   .venv-torch/bin/python scripts/export_families.py
#   KILN_LONG=1 cargo test --release --test families -- --nocapture
#
# The venv lives in .venv-torch/ at the repository root (git-ignored). It is
# large: the default torch wheel on PyPI pulls the CUDA libraries, about 5.6 GB
# in all, which is why neither CI nor scripts/test.sh installs it.
#
# Idempotent: when the venv already holds exactly the pinned versions and they
# import, nothing is downloaded. Set KILN_TORCH_VENV to use another directory,
# PYTHON to pick the interpreter that creates the venv (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${KILN_TORCH_VENV:-$root/.venv-torch}"
python="${PYTHON:-python3}"

# The pins: torch and torchvision here (they must move together), the rest shared
# with scripts/install-deps.sh so both venvs compute references the same way.
torch_pins=(torch==2.15.0 torchvision==0.29.2)
requirements="$here/requirements.txt"

pins_file="$(mktemp)"
trap 'rm -f "$pins_file"' EXIT
printf '%s\n' "${torch_pins[@]}" >"$pins_file"
grep -v '^\s*#' "$requirements" | sed 's/#.*//; /^\s*$/d' >>"$pins_file"

# Exit 0 when every pin is installed at exactly its version and the packages
# import (metadata alone can survive a half-finished install).
venv_ok() {
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$pins_file" <<'PY'
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    name, _, want = line.strip().partition("==")
    if not name:
        continue
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        print(f"install-torch: {name}: want {want}, have {have}")
        ok = False
if ok:
    try:
        import numpy, onnx, onnxruntime, torch, torchvision  # noqa: F401
    except Exception as e:  # any import failure means reinstall
        print(f"install-torch: import failed: {e}")
        ok = False
sys.exit(0 if ok else 1)
PY
}

if venv_ok; then
    echo "install-torch: $venv already has $(tr '\n' ' ' <"$pins_file")"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "install-torch: creating the virtualenv $venv with $("$python" --version 2>&1)"
    if ! "$python" -m venv "$venv"; then
        # Debian splits venv (and ensurepip) out of the interpreter package.
        echo "install-torch: '$python -m venv' failed; on Debian: apt-get install python3-venv" >&2
        exit 1
    fi
fi

echo "install-torch: installing $(tr '\n' ' ' <"$pins_file")(several GB, this takes a while)"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -r "$pins_file"

if ! venv_ok; then
    echo "install-torch: the venv still does not match the pins after installing" >&2
    exit 1
fi
echo "install-torch: done; run $venv/bin/python scripts/export_families.py"
