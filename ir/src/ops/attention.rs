//! Transformer blocks: scaled dot-product Attention (ONNX opset 23-25 semantics on 4-D operands)
//! and RotaryEmbedding.

use super::{dims_of, invalid, req, req_t, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{DType, Tensor, TensorType};

/// Scaled dot-product attention over 4-D operands (the frontend turns the 3-D ONNX form and the
/// KV cache concatenation into layout ops around it).
///
/// Inputs: Q `[B, Hq, Sq, D]`, K `[B, Hkv, Skv, D]`, V `[B, Hkv, Skv, Dv]`, an optional mask
/// (bool: true attends; or additive float of Q's dtype) broadcastable (right-aligned) to
/// `[B, Hq, Sq, M]` with `M <= Skv` (keys past `M` are masked), and optional `nonpad_kv_seqlen`
/// (i64 `[B]`: keys at or past it are padding). `Hq` is a multiple of `Hkv`; query head `h` reads
/// key/value head `h / (Hq / Hkv)` (grouped-query attention).
///
/// Outputs: Y `[B, Hq, Sq, Dv]` and, with `qk_mode`, the scores `[B, Hq, Sq, Skv]` at that stage.
///
/// For query `i` and key `j` of batch `b`: `s = scale * q.k`, then `softcap * tanh(s / softcap)`
/// when `softcap > 0`, plus the bias (mask, causal, window and padding terms, each 0 or -inf
/// except a float mask), softmax over `j`, and `Y = P V`. The causal and window terms place the
/// query block at `offset = nonpad_kv_seqlen[b] - Sq` when that input is present, else at
/// `past_len`: key `j` is causal-visible when `j <= i + offset`. A row whose bias is -inf
/// everywhere attends to nothing: its probabilities (and Y) are 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    /// Multiplies `q.k`.
    pub scale: f32,
    /// Causal masking.
    pub causal: bool,
    /// Soft capping of the scores (0 = none).
    pub softcap: f32,
    /// Length of the KV cache prefix before the current block (causal and window offset).
    pub past_len: usize,
    /// Keys more than this before the query position are masked (-1 = unbounded).
    pub left_window: i64,
    /// Keys more than this after the query position are masked (-1 = unbounded).
    pub right_window: i64,
    /// The second output: `None` for no second output; 0 or 1 for the (soft-capped) scores, 2 with
    /// the bias added, 3 for the probabilities.
    pub qk_mode: Option<u8>,
    /// The softmax runs in f32 or wider even for f16/bf16 inputs (ONNX `softmax_precision`);
    /// otherwise its steps round to the input type, as the ONNX reference does. The reference
    /// evaluator computes everything in f64 either way.
    pub wide_softmax: bool,
}

impl Attention {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Attention, OpError> {
        let mode = a.int("qk_mode", Some(-1))?;
        Ok(Attention {
            scale: a.float("scale", None)?,
            causal: a.bool("causal", false)?,
            softcap: a.float("softcap", Some(0.0))?,
            past_len: a.usize("past_len", Some(0))?,
            left_window: a.int("left_window", Some(-1))?,
            right_window: a.int("right_window", Some(-1))?,
            qk_mode: match mode {
                -1 => None,
                0..=3 => Some(mode as u8),
                _ => return invalid(format!("qk_mode {mode} must be -1 or 0..=3")),
            },
            wide_softmax: a.bool("wide_softmax", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("scale", Attr::Float(self.scale)),
            ("causal", Attr::Int(self.causal as i64)),
            ("softcap", Attr::Float(self.softcap)),
            ("past_len", Attr::Int(self.past_len as i64)),
            ("left_window", Attr::Int(self.left_window)),
            ("right_window", Attr::Int(self.right_window)),
            ("qk_mode", Attr::Int(self.qk_mode.map_or(-1, i64::from))),
            ("wide_softmax", Attr::Int(self.wide_softmax as i64)),
        ]
    }

    /// The operand sizes: `[B, Hq, Hkv, Sq, Skv, D, Dv]`.
    pub fn sizes(q: &[usize], k: &[usize], v: &[usize]) -> [usize; 7] {
        [q[0], q[1], k[1], q[2], k[2], q[3], v[3]]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (q, k, v) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
        let (qd, kd, vd) = (dims_of(q.ty)?, dims_of(k.ty)?, dims_of(v.ty)?);
        if qd.len() != 4 || kd.len() != 4 || vd.len() != 4 {
            return invalid(format!(
                "Q, K and V must be 4-D, got {}, {} and {}",
                q.ty, k.ty, v.ty
            ));
        }
        let dt = q.ty.dtype;
        if !dt.is_float() {
            return Err(OpError::Unsupported(format!("attention on {dt}")));
        }
        if k.ty.dtype != dt || v.ty.dtype != dt {
            return invalid(format!(
                "Q, K and V must share a dtype, got {}, {} and {}",
                q.ty, k.ty, v.ty
            ));
        }
        let [b, hq, hkv, sq, skv, dq, _dv] = Self::sizes(&qd, &kd, &vd);
        if kd[0] != b || vd[0] != b || vd[1] != hkv || vd[2] != skv || kd[3] != dq {
            return invalid(format!(
                "K and V do not match Q: Q {}, K {}, V {}",
                q.ty, k.ty, v.ty
            ));
        }
        if hkv == 0 || hq % hkv != 0 {
            return invalid(format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads"
            ));
        }
        if let Some(Some(m)) = ins.get(3) {
            let md = dims_of(m.ty)?;
            if m.ty.dtype != DType::Bool && m.ty.dtype != dt {
                return invalid(format!("the mask must be bool or {dt}, got {}", m.ty));
            }
            let full = [b, hq, sq, skv];
            let ok = md.len() <= 4
                && md
                    .iter()
                    .rev()
                    .zip(full.iter().rev())
                    .enumerate()
                    .all(
                        |(i, (&m, &f))| {
                            if i == 0 {
                                m <= f
                            } else {
                                m == f || m == 1
                            }
                        },
                    );
            if !ok || md.is_empty() {
                return invalid(format!(
                    "the mask {} does not broadcast to [{b}, {hq}, {sq}, <= {skv}]",
                    m.ty
                ));
            }
        }
        if let Some(Some(n)) = ins.get(4) {
            if !n.ty.dtype.is_int() || dims_of(n.ty)? != [b] {
                return invalid(format!("nonpad_kv_seqlen must be int[{b}], got {}", n.ty));
            }
        }
        let mut out = vec![TensorType::new(dt, &[b, hq, sq, vd[3]])];
        if self.qk_mode.is_some() {
            out.push(TensorType::new(dt, &[b, hq, sq, skv]));
        }
        Ok(out)
    }

    /// Whether key `j` is visible from query `i` by the causal, window and padding rules, for a
    /// query block at `offset` (`nonpad`: the number of real keys, when given).
    pub fn visible(&self, i: usize, j: usize, offset: i64, nonpad: Option<i64>) -> bool {
        let diff = i as i64 + offset - j as i64;
        if self.causal && diff < 0 {
            return false;
        }
        if self.left_window >= 0 && diff > self.left_window {
            return false;
        }
        if self.right_window >= 0 && -diff > self.right_window {
            return false;
        }
        nonpad.is_none_or(|n| (j as i64) < n)
    }

    /// The definition above, in f64, one query row at a time.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (req_t(ins, 0)?, req_t(ins, 1)?, req_t(ins, 2)?);
        let [b, hq, hkv, sq, skv, d, dv] = Self::sizes(q.shape(), k.shape(), v.shape());
        let (qv, kv, vv) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec());
        let mask = ins.get(3).copied().flatten();
        let nonpad = ins.get(4).copied().flatten().map(Tensor::to_i64_vec);
        // The mask, right-aligned against [B, Hq, Sq, M].
        let (mdims, mvals) = match mask {
            Some(m) => {
                let mut md = vec![1usize; 4 - m.shape().len()];
                md.extend_from_slice(m.shape());
                let vals: Vec<f64> = if m.dtype() == DType::Bool {
                    m.to_i64_vec()
                        .iter()
                        .map(|&x| if x != 0 { 0.0 } else { f64::NEG_INFINITY })
                        .collect()
                } else {
                    m.to_f64_vec()
                };
                (md, vals)
            }
            None => (vec![1, 1, 1, skv], vec![0.0; skv]),
        };
        let mask_at = |bi: usize, h: usize, i: usize, j: usize| -> f64 {
            if j >= mdims[3] {
                return f64::NEG_INFINITY;
            }
            let pick = |x: usize, n: usize| if n == 1 { 0 } else { x };
            let idx = ((pick(bi, mdims[0]) * mdims[1] + pick(h, mdims[1])) * mdims[2]
                + pick(i, mdims[2]))
                * mdims[3]
                + j;
            mvals[idx]
        };
        let group = hq / hkv;
        let mut y = vec![0.0; b * hq * sq * dv];
        let mut qk = vec![0.0; b * hq * sq * skv];
        for bi in 0..b {
            let np = nonpad.as_ref().map(|n| n[bi]);
            let offset = np.map_or(self.past_len as i64, |n| n - sq as i64);
            for h in 0..hq {
                let kh = h / group;
                for i in 0..sq {
                    let qrow = &qv[((bi * hq + h) * sq + i) * d..][..d];
                    let mut bias = vec![0.0; skv];
                    let mut s = vec![0.0; skv];
                    for j in 0..skv {
                        bias[j] = mask_at(bi, h, i, j);
                        if !self.visible(i, j, offset, np) {
                            bias[j] = f64::NEG_INFINITY;
                        }
                        let krow = &kv[((bi * hkv + kh) * skv + j) * d..][..d];
                        let dot: f64 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                        s[j] = dot * self.scale as f64;
                        if self.softcap > 0.0 {
                            let c = self.softcap as f64;
                            s[j] = c * (s[j] / c).tanh();
                        }
                    }
                    let t: Vec<f64> = s.iter().zip(&bias).map(|(a, b)| a + b).collect();
                    let masked = bias.iter().all(|&x| x == f64::NEG_INFINITY);
                    let m = t
                        .iter()
                        .fold(f64::NEG_INFINITY, |a, &b| super::nan_max(a, b));
                    let m = if m == f64::NEG_INFINITY { 0.0 } else { m };
                    let e: Vec<f64> = t.iter().map(|x| (x - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    let p: Vec<f64> = e
                        .iter()
                        .map(|x| if masked { 0.0 } else { x / sum })
                        .collect();
                    let row = ((bi * hq + h) * sq + i) * skv;
                    let stage = match self.qk_mode {
                        Some(2) => &t,
                        Some(3) => &p,
                        _ => &s,
                    };
                    qk[row..row + skv].copy_from_slice(stage);
                    let yrow = ((bi * hq + h) * sq + i) * dv;
                    for (j, pj) in p.iter().enumerate() {
                        let vrow = &vv[((bi * hkv + kh) * skv + j) * dv..][..dv];
                        for c in 0..dv {
                            y[yrow + c] += pj * vrow[c];
                        }
                    }
                }
            }
        }
        let dt = q.dtype();
        let mut out = vec![Tensor::from_f64(dt, vec![b, hq, sq, dv], &y)];
        if self.qk_mode.is_some() {
            out.push(Tensor::from_f64(dt, vec![b, hq, sq, skv], &qk));
        }
        Ok(out)
    }
}

/// Rotary position embedding.
///
/// Inputs: X `[B, H, S, D]`, or `[B, S, H * D]` with `num_heads = H`; the caches cos and sin,
/// `[P, R/2]` indexed by position_ids (int `[B, S]`), or `[B, S, R/2]` without position_ids. The
/// first `R` (`rotary_dim`, or D when 0) features of every head rotate in pairs `(x1, x2)` (the two
/// halves, or even/odd features when `interleaved`) to `(c x1 - s x2, s x1 + c x2)`; the rest pass
/// through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotary {
    /// Pairs are adjacent features rather than the two halves.
    pub interleaved: bool,
    /// Rotated features per head (0: all).
    pub rotary_dim: usize,
    /// Heads of a 3-D input (0 for 4-D).
    pub num_heads: usize,
}

/// The geometry of a rotary embedding: `[B, H, S, D, R]` and whether X is 3-D.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotaryDims {
    /// Batch.
    pub b: usize,
    /// Heads.
    pub h: usize,
    /// Sequence length.
    pub s: usize,
    /// Head size.
    pub d: usize,
    /// Rotated features per head.
    pub r: usize,
    /// X is `[B, S, H * D]`.
    pub packed: bool,
}

impl RotaryDims {
    /// Element offset of feature 0 of (batch, head, position) in X.
    pub fn x_offset(&self, b: usize, h: usize, s: usize) -> usize {
        if self.packed {
            (b * self.s + s) * self.h * self.d + h * self.d
        } else {
            ((b * self.h + h) * self.s + s) * self.d
        }
    }

    /// The element offsets of the `k`-th rotated pair inside a head.
    pub fn pair(&self, k: usize, interleaved: bool) -> (usize, usize) {
        if interleaved {
            (2 * k, 2 * k + 1)
        } else {
            (k, k + self.r / 2)
        }
    }
}

impl Rotary {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Rotary, OpError> {
        Ok(Rotary {
            interleaved: a.bool("interleaved", false)?,
            rotary_dim: a.usize("rotary_dim", Some(0))?,
            num_heads: a.usize("num_heads", Some(0))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("interleaved", Attr::Int(self.interleaved as i64)),
            ("rotary_dim", Attr::Int(self.rotary_dim as i64)),
            ("num_heads", Attr::Int(self.num_heads as i64)),
        ]
    }

    /// The geometry for X of dims `x`.
    pub fn dims(&self, x: &[usize]) -> Result<RotaryDims, OpError> {
        let (b, h, s, d, packed) = match *x {
            [b, h, s, d] => (b, h, s, d, false),
            [b, s, hd] => {
                if self.num_heads == 0 || hd % self.num_heads != 0 {
                    return invalid(format!(
                        "a 3-D input needs num_heads dividing its hidden size {hd}, got {}",
                        self.num_heads
                    ));
                }
                (b, self.num_heads, s, hd / self.num_heads, true)
            }
            _ => return invalid(format!("X must be 3-D or 4-D, got {x:?}")),
        };
        let r = if self.rotary_dim == 0 {
            d
        } else {
            self.rotary_dim
        };
        if r > d || r % 2 != 0 {
            return invalid(format!(
                "rotary_dim {r} must be even and at most the head size {d}"
            ));
        }
        Ok(RotaryDims {
            b,
            h,
            s,
            d,
            r,
            packed,
        })
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let g = self.dims(&dims_of(x.ty)?)?;
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("rotary on {}", x.ty.dtype)));
        }
        let pos = ins.get(3).copied().flatten();
        for i in [1, 2] {
            let c = req(ins, i)?;
            let cd = dims_of(c.ty)?;
            let ok = match pos {
                Some(_) => cd.len() == 2 && cd[1] == g.r / 2,
                None => cd == [g.b, g.s, g.r / 2],
            };
            if !ok || c.ty.dtype != x.ty.dtype {
                return invalid(format!(
                    "cache {} does not fit rotary dim {} (position_ids {})",
                    c.ty,
                    g.r,
                    if pos.is_some() { "given" } else { "absent" }
                ));
            }
        }
        if let Some(p) = pos {
            if !p.ty.dtype.is_int() || dims_of(p.ty)? != [g.b, g.s] {
                return invalid(format!(
                    "position_ids must be int[{}, {}], got {}",
                    g.b, g.s, p.ty
                ));
            }
        }
        Ok(vec![x.ty.clone()])
    }

    /// The definition above in f64. Position ids outside the cache are an error.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let g = self.dims(x.shape())?;
        let (cos, sin) = (req_t(ins, 1)?, req_t(ins, 2)?);
        let (cv, sv) = (cos.to_f64_vec(), sin.to_f64_vec());
        let pos = ins.get(3).copied().flatten().map(Tensor::to_i64_vec);
        let xv = x.to_f64_vec();
        let mut y = xv.clone();
        let half = g.r / 2;
        for b in 0..g.b {
            for s in 0..g.s {
                let row = match &pos {
                    Some(p) => {
                        let id = p[b * g.s + s];
                        if id < 0 || id as usize >= cos.shape()[0] {
                            return invalid(format!(
                                "position id {id} is outside the cache of {} positions",
                                cos.shape()[0]
                            ));
                        }
                        id as usize
                    }
                    None => b * g.s + s,
                };
                for h in 0..g.h {
                    let base = g.x_offset(b, h, s);
                    for k in 0..half {
                        let (c, sn) = (cv[row * half + k], sv[row * half + k]);
                        let (i1, i2) = g.pair(k, self.interleaved);
                        let (x1, x2) = (xv[base + i1], xv[base + i2]);
                        y[base + i1] = c * x1 - sn * x2;
                        y[base + i2] = sn * x1 + c * x2;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &y)])
    }
}
