#!/usr/bin/env python3
"""Fits the polynomial of kiln's f32 `exp` (runtime/src/math.rs, `EXP_P`) and prints it.

    python3 scripts/fit_exp_poly.py [DEGREE]      # default 4; needs numpy

`exp(r) = 1 + r + r^2 P(r)` on `|r| <= ln2 / 2`, with P of the given degree chosen to minimise the
largest relative error of the whole expression: weighted least squares on Chebyshev points,
reweighted by the error (Lawson's algorithm) until the error levels out. The coefficients are
rounded to f32 and the error is measured again with the rounded ones, in f64.
"""
import sys

import numpy as np


def fit(deg: int):
    a = np.log(2) / 2
    r = np.cos(np.linspace(0, np.pi, 4001)) * a
    r = r[np.abs(r) > 1e-9]
    f = (np.exp(r) - 1 - r) / r**2  # what P must match
    scale = r**2 / np.exp(r)  # turns an error in P into a relative error of exp
    vander = np.vander(r, deg + 1)  # highest degree first
    w = np.ones_like(r)
    for _ in range(200):
        sw = w * scale
        c, *_ = np.linalg.lstsq(vander * sw[:, None], f * sw, rcond=None)
        err = np.abs((vander @ c - f) * scale)
        w = w * np.sqrt(err + 1e-30)
        w /= w.max()
    c32 = c.astype(np.float32)
    p = np.polyval(c32.astype(np.float64), r)
    rel = np.abs((1 + r + r**2 * p) / np.exp(r) - 1).max()
    return c32, rel


def main() -> int:
    deg = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    c, rel = fit(deg)
    print(f"degree {deg}: max relative error {rel:.3e} ({rel / 2**-24:.3f} x 2^-24)")
    for v in c:
        print(f"    {float(np.float32(v))!r},")
    return 0


if __name__ == "__main__":
    sys.exit(main())
