#!/usr/bin/env bash
# Installs what kiln's tests need beyond Rust on a Debian 12 machine:
#   - qemu-user + the aarch64 cross gcc/libc, to link and run aarch64 output;
#   - the pinned Python packages from scripts/requirements.txt (onnx,
#     onnxruntime, numpy), to build test models and reference outputs.
# Idempotent: each step is skipped when its packages are already present, so
# running it on every CI run costs a second or two.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"

# Root on CI and dev machines; a developer's own machine may need sudo.
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
else
    sudo=(sudo)
fi

debian_packages=(qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)

missing=()
for pkg in "${debian_packages[@]}"; do
    # `dpkg -s` exits 0 for packages that were removed but left config files,
    # so look at the status line rather than the exit code alone.
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: Debian packages already installed: ${debian_packages[*]}"
else
    echo "install-deps: installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Compare installed versions against the `name==version` pins; a missing
# module or any mismatch triggers the pip install.
python_ok() {
    "$python" - "$requirements" <<'PY'
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        print(f"install-deps: {name}: want {want}, have {have}")
        ok = False
try:
    import onnx, onnxruntime, numpy  # noqa: F401  (metadata alone can lie about a broken install)
except Exception as e:  # pragma: no cover - any import failure means reinstall
    print(f"install-deps: import failed: {e}")
    ok = False
sys.exit(0 if ok else 1)
PY
}

if python_ok; then
    echo "install-deps: Python packages already at pinned versions ($requirements)"
else
    echo "install-deps: installing Python packages from $requirements"
    "$python" -m pip install --disable-pip-version-check -r "$requirements"
    python_ok
fi

echo "install-deps: done"
