//! Helpers shared by the integration tests: building small functions around the math emitters,
//! for the JIT (to run them) or for an object file (to inspect it).
#![allow(dead_code)]

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};
use kiln_runtime::math::{self, MathOpts};

/// Which emitter a test function wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fun {
    Exp,
    /// `exp` for arguments up to 43.
    ExpSmall,
    Log,
    Tanh,
    Sigmoid,
    Silu,
    Erf,
    Pow,
}

pub const ALL: [Fun; 8] = [
    Fun::Exp,
    Fun::ExpSmall,
    Fun::Log,
    Fun::Tanh,
    Fun::Sigmoid,
    Fun::Silu,
    Fun::Erf,
    Fun::Pow,
];

impl Fun {
    pub fn name(self) -> &'static str {
        match self {
            Fun::Exp => "exp",
            Fun::ExpSmall => "exp_small",
            Fun::Log => "log",
            Fun::Tanh => "tanh",
            Fun::Sigmoid => "sigmoid",
            Fun::Silu => "silu",
            Fun::Erf => "erf",
            Fun::Pow => "pow",
        }
    }
}

/// Defines `name(x: *const f32, y: *const f32, out: *mut f32)` in `module`: loads one `ty`
/// (`F32` or `F32X4`) from `x` (and `y` for pow), applies the emitter, stores the result.
pub fn define<M: Module>(
    module: &mut M,
    name: &str,
    fun: Fun,
    ty: Type,
    opts: &MathOpts,
) -> cranelift_module::FuncId {
    let cfg = module.target_config();
    let ptr = cfg.pointer_type();
    let mut ctx = module.make_context();
    for _ in 0..3 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let p = b.block_params(block).to_vec();
        let flags = MemFlagsData::trusted();
        let x = b.ins().load(ty, flags, p[0], 0);
        let y = b.ins().load(ty, flags, p[1], 0);
        let r: Value = match fun {
            Fun::Exp => math::exp_with(&mut b, x, opts),
            Fun::ExpSmall => math::exp_small_with(&mut b, x, opts),
            Fun::Log => math::log_with(&mut b, x, opts),
            Fun::Tanh => math::tanh_with(&mut b, x, opts),
            Fun::Sigmoid => math::sigmoid_with(&mut b, x, opts),
            Fun::Silu => math::silu_with(&mut b, x, opts),
            Fun::Erf => math::erf_with(&mut b, x, opts),
            Fun::Pow => math::pow_with(&mut b, x, y, opts),
        };
        b.ins().store(flags, r, p[2], 0);
        b.ins().return_(&[]);
        b.finalize(cfg);
    }
    let id = module
        .declare_function(name, Linkage::Export, &ctx.func.signature)
        .unwrap();
    module
        .define_function(id, &mut ctx)
        .unwrap_or_else(|e| panic!("defining {name}: {e:?}\n{}", ctx.func.display()));
    module.clear_context(&mut ctx);
    id
}

/// An ISA for `triple` with the given ISA flags (`has_sse41`, `has_fma`, ...), PIC as in a
/// generated library.
pub fn isa(triple: &str, isa_flags: &[&str]) -> OwnedTargetIsa {
    isa_with(triple, isa_flags, true)
}

/// [`isa`], with PIC chosen (the JIT wants non-PIC code).
pub fn isa_with(triple: &str, isa_flags: &[&str], pic: bool) -> OwnedTargetIsa {
    let mut fb = settings::builder();
    fb.set("opt_level", "speed").unwrap();
    fb.set("is_pic", if pic { "true" } else { "false" })
        .unwrap();
    fb.set("use_colocated_libcalls", "false").unwrap();
    let mut ib = cranelift_codegen::isa::lookup_by_name(triple).unwrap();
    for f in isa_flags {
        ib.enable(f).unwrap();
    }
    ib.finish(settings::Flags::new(fb)).unwrap()
}

/// Both lane types the emitters accept.
pub const TYPES: [Type; 2] = [types::F32, types::F32X4];
