//! The kernel builder: a thin layer over Cranelift's `FunctionBuilder` with the handful of shapes every
//! kernel is made of (counted loops, pointer arithmetic, tensor loads and stores, vector helpers).
//!
//! Kernels index memory in bytes with `i64` offsets (both targets are 64-bit). Loops with a trip count
//! known at compile time are emitted as do-while loops (one compare per iteration, no pre-test); loops
//! whose bounds are only known at run time get a pre-test.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32X4, I64};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_runtime::math::{self, MathOpts};

/// What the code generator may assume about the target, derived from the ISA flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodegenCfg {
    /// The target has a native fused multiply-add (x86 `fma`, always on aarch64). Without it
    /// Cranelift lowers a vector `fma` to calls to `fmaf`, which the library cannot have.
    pub fma: bool,
    /// The target rounds natively (`floor`/`ceil`): SSE4.1 on x86, always on aarch64. Without it the
    /// instructions become libcalls.
    pub round: bool,
    /// The target is aarch64 (32 vector registers and lane-indexed `fmla`): the GEMM tile shape
    /// depends on it.
    pub aarch64: bool,
    /// Whether 3x3 convolutions may use Winograd (`Options::winograd`).
    pub winograd: crate::Winograd,
}

/// A pointer operand. `ro` marks weights: they never change while the library runs, so their loads
/// are `readonly` and `can_move` (free to hoist out of loops).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ptr {
    /// The address.
    pub v: Value,
    /// Points into the (read-only) weights.
    pub ro: bool,
}

/// The builder every kernel is written against.
pub(crate) struct Kb<'a> {
    /// The underlying Cranelift builder.
    pub b: FunctionBuilder<'a>,
    /// Target capabilities.
    pub cfg: CodegenCfg,
    /// The function's pointer parameters, in signature order.
    pub args: Vec<Ptr>,
    /// For a kernel that splits its work: `(part, parts)`, both i64, the share this call computes
    /// (see [`Kb::share`]). `None` in kernels that do all the work in one call.
    pub part: Option<(Value, Value)>,
}

impl<'a> Kb<'a> {
    /// Integer constant (i64).
    pub fn iconst(&mut self, x: i64) -> Value {
        self.b.ins().iconst(I64, x)
    }

    /// f32 constant.
    pub fn fconst(&mut self, x: f32) -> Value {
        self.b.ins().f32const(x)
    }

    /// f32x4 constant with `x` in every lane.
    pub fn fsplat(&mut self, x: f32) -> Value {
        let s = self.fconst(x);
        self.b.ins().splat(F32X4, s)
    }

    /// `x` (f32) in every lane.
    pub fn splat(&mut self, x: Value) -> Value {
        self.b.ins().splat(F32X4, x)
    }

    /// A constant of type `ty` (F32 or F32X4).
    pub fn fconst_ty(&mut self, ty: Type, x: f32) -> Value {
        if ty == F32X4 {
            self.fsplat(x)
        } else {
            self.fconst(x)
        }
    }

    /// Options for the inline math emitters.
    pub fn math(&self) -> MathOpts {
        MathOpts { fma: self.cfg.fma }
    }

    /// `p + off` (bytes).
    pub fn at(&mut self, p: Ptr, off: Value) -> Ptr {
        Ptr {
            v: self.b.ins().iadd(p.v, off),
            ro: p.ro,
        }
    }

    /// `p + off` for a constant `off` (bytes).
    pub fn offset(&mut self, p: Ptr, off: i64) -> Ptr {
        if off == 0 {
            return p;
        }
        Ptr {
            v: self.b.ins().iadd_imm_s(p.v, off),
            ro: p.ro,
        }
    }

    /// `i * scale` (an index to a byte offset).
    pub fn scale(&mut self, i: Value, scale: i64) -> Value {
        match scale {
            0 => self.iconst(0),
            1 => i,
            s if s > 0 && (s as u64).is_power_of_two() => {
                self.b.ins().ishl_imm_s(i, s.trailing_zeros() as i64)
            }
            s => self.b.ins().imul_imm_s(i, s),
        }
    }

    /// `p + i * scale`.
    pub fn index(&mut self, p: Ptr, i: Value, scale: i64) -> Ptr {
        if scale == 0 {
            return p;
        }
        let off = self.scale(i, scale);
        self.at(p, off)
    }

    fn flags(&self, p: Ptr, ty: Type) -> MemFlagsData {
        // Tensors are dense arrays of naturally aligned elements in 64-byte aligned buffers, so scalar
        // accesses are aligned; vector accesses are at element granularity and are not.
        let mut f = MemFlagsData::new().with_notrap();
        if !ty.is_vector() {
            f = f.with_aligned();
        }
        if p.ro {
            f = f.with_readonly().with_can_move();
        }
        f
    }

    /// Loads a `ty` from `p + off`.
    pub fn load(&mut self, ty: Type, p: Ptr, off: i32) -> Value {
        let f = self.flags(p, ty);
        self.b.ins().load(ty, f, p.v, off)
    }

    /// Stores `x` to `p + off`.
    pub fn store(&mut self, x: Value, p: Ptr, off: i32) {
        let ty = self.b.func.dfg.value_type(x);
        let f = self.flags(p, ty);
        self.b.ins().store(f, x, p.v, off);
    }

    /// A mutable variable of type `ty` holding `init`.
    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// Reads a variable.
    pub fn get(&mut self, v: Variable) -> Value {
        self.b.use_var(v)
    }

    /// Writes a variable.
    pub fn set(&mut self, v: Variable, x: Value) {
        self.b.def_var(v, x)
    }

    /// `body(i)` for `i = start, start + step, ...` while `i < end`; all compile-time constants.
    pub fn for_range(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        debug_assert!(step > 0);
        if start >= end {
            return;
        }
        let trips = (end - start + step - 1) / step;
        if trips == 1 {
            let i = self.iconst(start);
            body(self, i);
            return;
        }
        let last = start + (trips - 1) * step;
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(head, I64);
        let s = self.iconst(start);
        self.b.ins().jump(head, &[BlockArg::Value(s)]);
        self.b.switch_to_block(head);
        let i = self.b.block_params(head)[0];
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        let again = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedLessThanOrEqual, next, last);
        self.b
            .ins()
            .brif(again, head, &[BlockArg::Value(next)], exit, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `body(i)` for `i` in `0..n`.
    pub fn for_n(&mut self, n: usize, body: impl FnOnce(&mut Self, Value)) {
        self.for_range(0, n as i64, 1, body)
    }

    /// `body(i)` for `i` in `lo..hi` (run-time bounds, i64), with a pre-test.
    pub fn for_dyn(&mut self, lo: Value, hi: Value, body: impl FnOnce(&mut Self, Value)) {
        let head = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(head, I64);
        self.b.ins().jump(head, &[BlockArg::Value(lo)]);
        self.b.switch_to_block(head);
        let i = self.b.block_params(head)[0];
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        self.b.seal_block(body_block);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.ins().jump(head, &[BlockArg::Value(next)]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Runs `then` only when `c` is non-zero.
    pub fn if_then(&mut self, c: Value, then: impl FnOnce(&mut Self)) {
        let t = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(c, t, &[], done, &[]);
        self.b.switch_to_block(t);
        self.b.seal_block(t);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// Runs `then` when `c` is non-zero and `els` otherwise.
    pub fn if_else(&mut self, c: Value, then: impl FnOnce(&mut Self), els: impl FnOnce(&mut Self)) {
        let t = self.b.create_block();
        let e = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(c, t, &[], e, &[]);
        self.b.switch_to_block(t);
        self.b.seal_block(t);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(e);
        self.b.seal_block(e);
        els(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// `a * b + c`, fused when the target has a native FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.cfg.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// Sum of the four lanes of an f32x4.
    pub fn hsum(&mut self, v: Value) -> Value {
        self.hreduce(v, |b, x, y| b.ins().fadd(x, y))
    }

    /// Maximum of the four lanes of an f32x4.
    pub fn hmax(&mut self, v: Value) -> Value {
        self.hreduce(v, |b, x, y| b.ins().fmax(x, y))
    }

    fn hreduce(
        &mut self,
        v: Value,
        f: impl Fn(&mut FunctionBuilder<'a>, Value, Value) -> Value,
    ) -> Value {
        let l: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(v, i)).collect();
        let a = f(&mut self.b, l[0], l[1]);
        let c = f(&mut self.b, l[2], l[3]);
        f(&mut self.b, a, c)
    }

    /// `max(x, y)` for f32 or f32x4.
    ///
    /// Cranelift's `fmax` propagates NaN, like the reference evaluator's `f64::max` does not; the
    /// difference only shows on NaN inputs.
    pub fn fmax(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fmax(x, y)
    }

    /// `min(x, y)` for f32 or f32x4.
    pub fn fmin(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fmin(x, y)
    }

    /// `exp(x)` for f32 or f32x4, inline.
    pub fn exp(&mut self, x: Value) -> Value {
        let o = self.math();
        math::exp_with(&mut self.b, x, &o)
    }

    /// `exp(x)` for `x <= 43` (or NaN), such as softmax's `x - max`: the same bits as
    /// [`Kb::exp`] in fewer instructions.
    pub fn exp_small(&mut self, x: Value) -> Value {
        let o = self.math();
        math::exp_small_with(&mut self.b, x, &o)
    }

    /// This call's share `[lo, hi)` of `units` independent work units (i64 values). With no
    /// `part`, or as part `p` of `n`, the range `[units * p / n, units * (p + 1) / n)`: the parts
    /// cover every unit exactly once and differ in size by at most one unit.
    pub fn share(&mut self, units: usize) -> (Value, Value) {
        match self.part {
            None => {
                let lo = self.iconst(0);
                let hi = self.iconst(units as i64);
                (lo, hi)
            }
            Some((p, n)) => {
                let u = units as i64;
                let a = self.b.ins().imul_imm_s(p, u);
                let lo = self.b.ins().udiv(a, n);
                let p1 = self.b.ins().iadd_imm_s(p, 1);
                let b = self.b.ins().imul_imm_s(p1, u);
                let hi = self.b.ins().udiv(b, n);
                (lo, hi)
            }
        }
    }

    /// Returns from the kernel.
    pub fn ret(&mut self) {
        self.b.ins().return_(&[]);
    }
}
