#!/usr/bin/env bash
# The main job on the bundled example: compile tests/models/cnn.onnx (a small digits CNN: conv,
# batch-norm, relu, pooling, gemm head, softmax) for x86_64 and aarch64, link it into the C example with
# nothing else, run it (aarch64 under qemu) and compare with onnxruntime's output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
kiln=target/release/kiln
model=tests/models/cnn.onnx
out=build/demo

echo "== kiln inspect $model"
$kiln inspect "$model"

for arch in x86_64 aarch64; do
  echo
  echo "== kiln compile $model --target $arch-unknown-linux-gnu"
  $kiln compile "$model" --target "$arch-unknown-linux-gnu" --out-dir "$out/$arch" --report
  if [ "$arch" = x86_64 ]; then cc=(cc); run=(); else cc=(aarch64-linux-gnu-gcc -static); run=(qemu-aarch64); fi
  "${cc[@]}" -std=c99 -O2 -Wall -I "$out/$arch" examples/c/classify.c "$out/$arch/libcnn.a" -o "$out/$arch/classify"
  echo "nm -u libcnn.a: [$(nm -u "$out/$arch/libcnn.a" | grep -v ':$' | tr -s ' \n' ' ')]"
  "${run[@]}" "$out/$arch/classify" tests/data/cnn/input_0.bin "$out/$arch/probs.bin"
  python3 - "$out/$arch/probs.bin" tests/data/cnn/output_0.bin <<'PY'
import sys, numpy as np
got = np.fromfile(sys.argv[1], np.float32); ref = np.fromfile(sys.argv[2], np.float32)
err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)))
print(f"max relative difference to onnxruntime: {err:.2e} ({'OK' if err < 1e-4 else 'MISMATCH'})")
sys.exit(0 if err < 1e-4 else 1)
PY
done
