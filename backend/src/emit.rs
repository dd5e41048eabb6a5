//! Code emission: one Cranelift function per distinct kernel, the `NAME_run` entry, the weights data
//! object, and the object file.

use crate::builder::{CodegenCfg, Kb, Ptr};
use crate::lower::{Arg, Lowered};
use crate::memory::{Layout, Storage};
use crate::{BackendError, KernelClif};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, UserFuncName,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{default_libcall_names, DataDescription, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_ir::{Graph, NodeId};
use std::collections::HashMap;

/// What emission produced.
pub(crate) struct Emitted {
    /// The ELF object.
    pub object: Vec<u8>,
    /// Machine code bytes over all functions.
    pub code_bytes: usize,
    /// CLIF of every function, when asked for.
    pub clif: Vec<KernelClif>,
}

/// Inputs of [`emit`] that do not come from lowering.
pub(crate) struct EmitOptions<'a> {
    /// Symbol prefix.
    pub name: &'a str,
    /// Embedded weights blob (`None` in external mode: `NAME_run` takes a weights pointer).
    pub embedded: Option<&'a [u8]>,
    /// Whether `NAME_run` takes a weights pointer.
    pub external: bool,
    /// Keep the CLIF text of every function.
    pub want_clif: bool,
    /// Compile the functions (false: only build and return the CLIF).
    pub compile: bool,
}

/// A kernel to emit: which node it serves, its name stem, its operands' read-only flags and body.
struct KernelReq<'a> {
    node: NodeId,
    kind: &'a str,
    ro: Vec<bool>,
    build: &'a dyn Fn(&mut Kb),
}

struct Emitter<'a> {
    g: &'a Graph,
    module: ObjectModule,
    cfg: CodegenCfg,
    ctx: Context,
    fctx: FunctionBuilderContext,
    by_text: HashMap<String, FuncId>,
    clif: Vec<KernelClif>,
    code_bytes: usize,
    opts: &'a EmitOptions<'a>,
    count: usize,
}

/// Emits the whole object.
pub(crate) fn emit(
    g: &Graph,
    l: &Lowered,
    lay: &Layout,
    isa: OwnedTargetIsa,
    cfg: CodegenCfg,
    opts: &EmitOptions,
) -> Result<Emitted, BackendError> {
    let mut ob = ObjectBuilder::new(isa, format!("{}.o", opts.name), default_libcall_names())
        .map_err(|e| BackendError::Internal(format!("object builder: {e}")))?;
    ob.per_function_section(true);
    let module = ObjectModule::new(ob);
    let mut em = Emitter {
        g,
        ctx: module.make_context(),
        module,
        cfg,
        fctx: FunctionBuilderContext::new(),
        by_text: HashMap::new(),
        clif: Vec::new(),
        code_bytes: 0,
        opts,
        count: 0,
    };

    let ro_of = |a: &Arg| match a {
        Arg::Val(v) => matches!(lay.storage.get(&l.root[v]), Some(Storage::Weights(_))),
        Arg::Derived(_) => true,
        Arg::Scratch(_) => false,
    };
    let mut step_funcs = Vec::with_capacity(l.steps.len());
    for s in &l.steps {
        let req = KernelReq {
            node: s.node,
            kind: &s.kind,
            ro: s.args.iter().map(ro_of).collect(),
            build: &*s.build,
        };
        step_funcs.push(em.kernel(&req)?);
    }
    let mut copy_funcs = Vec::new();
    for (v, _) in &lay.copies {
        let bytes = g.ty(*v).byte_size().unwrap_or(0);
        let build = move |kb: &mut Kb| crate::kernels::layout::copy_kernel(kb, bytes);
        let ro = matches!(lay.storage.get(&l.root[v]), Some(Storage::Weights(_)));
        let req = KernelReq {
            node: v.node,
            kind: "copy",
            ro: vec![ro, false],
            build: &build,
        };
        copy_funcs.push(em.kernel(&req)?);
    }

    let weights_data = match opts.embedded {
        Some(bytes) if !bytes.is_empty() => {
            let id = em
                .module
                .declare_data(
                    &format!("{}_weights", opts.name),
                    Linkage::Local,
                    false,
                    false,
                )
                .map_err(|e| BackendError::Internal(format!("declare weights: {e}")))?;
            let mut d = DataDescription::new();
            d.define(bytes.to_vec().into_boxed_slice());
            d.set_align(crate::weights::WEIGHTS_ALIGN as u64);
            em.module
                .define_data(id, &d)
                .map_err(|e| BackendError::Internal(format!("define weights: {e}")))?;
            Some(id)
        }
        _ => None,
    };

    em.entry(l, lay, &step_funcs, &copy_funcs, weights_data)?;
    let code_bytes = em.code_bytes;
    let clif = std::mem::take(&mut em.clif);
    if !opts.compile {
        // Declared functions were never defined; there is no object to write.
        return Ok(Emitted {
            object: Vec::new(),
            code_bytes,
            clif,
        });
    }
    let product = em.module.finish();
    let object = product
        .emit()
        .map_err(|e| BackendError::Internal(format!("writing the object: {e}")))?;
    Ok(Emitted {
        object,
        code_bytes,
        clif,
    })
}

impl<'a> Emitter<'a> {
    fn sig(&self, params: usize) -> Signature {
        let mut sig = self.module.make_signature();
        sig.params
            .extend(std::iter::repeat_n(AbiParam::new(I64), params));
        sig
    }

    /// Builds a kernel, reusing an existing function when the CLIF is identical.
    fn kernel(&mut self, req: &KernelReq) -> Result<FuncId, BackendError> {
        let sig = self.sig(req.ro.len());
        let fcfg = self.module.target_config();
        let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params = b.block_params(entry).to_vec();
            let args = params
                .iter()
                .zip(&req.ro)
                .map(|(&v, &ro)| Ptr { v, ro })
                .collect();
            let mut kb = Kb {
                b,
                cfg: self.cfg,
                args,
                part: None,
            };
            (req.build)(&mut kb);
            kb.ret();
            kb.b.seal_all_blocks();
            kb.b.finalize(fcfg);
        }
        let text = func.display().to_string();
        let node = self.g.node(req.node);
        let label = format!("node \"{}\" ({})", node.name, node.op.name());
        if let Some(&id) = self.by_text.get(&text) {
            if let Some(k) = self.clif.iter_mut().find(|k| k.func == id.as_u32()) {
                k.nodes.push(label);
            }
            return Ok(id);
        }
        let symbol = format!("{}_k{}_{}", self.opts.name, self.count, req.kind);
        self.count += 1;
        let id = self
            .module
            .declare_function(&symbol, Linkage::Local, &func.signature)
            .map_err(|e| BackendError::Internal(format!("declare {symbol}: {e}")))?;
        self.by_text.insert(text.clone(), id);
        if self.opts.want_clif {
            self.clif.push(KernelClif {
                symbol: symbol.clone(),
                nodes: vec![label.clone()],
                clif: text,
                func: id.as_u32(),
            });
        }
        if self.opts.compile {
            func.name = UserFuncName::user(0, id.as_u32());
            self.define(id, func, &symbol, &label)?;
        }
        Ok(id)
    }

    fn define(
        &mut self,
        id: FuncId,
        func: Function,
        symbol: &str,
        label: &str,
    ) -> Result<(), BackendError> {
        self.ctx.clear();
        self.ctx.func = func;
        if let Err(e) = self.module.define_function(id, &mut self.ctx) {
            let detail = match &e {
                cranelift_module::ModuleError::Compilation(
                    cranelift_codegen::CodegenError::Verifier(v),
                ) => cranelift_codegen::print_errors::pretty_verifier_error(
                    &self.ctx.func,
                    None,
                    v.clone(),
                ),
                other => other.to_string(),
            };
            return Err(BackendError::Internal(format!(
                "compiling {symbol} for {label}: {detail}"
            )));
        }
        if let Some(c) = self.ctx.compiled_code() {
            self.code_bytes += c.code_info().total_size as usize;
        }
        Ok(())
    }

    /// `int NAME_run(const NAME_inputs *in, NAME_outputs *out, void *arena[, const void *weights])`.
    fn entry(
        &mut self,
        l: &Lowered,
        lay: &Layout,
        step_funcs: &[FuncId],
        copy_funcs: &[FuncId],
        weights_data: Option<cranelift_module::DataId>,
    ) -> Result<(), BackendError> {
        let g = self.g;
        let mut sig = self.sig(if self.opts.external { 4 } else { 3 });
        sig.returns.push(AbiParam::new(I32));
        let symbol = format!("{}_run", self.opts.name);
        let id = self
            .module
            .declare_function(&symbol, Linkage::Export, &sig)
            .map_err(|e| BackendError::Internal(format!("declare {symbol}: {e}")))?;
        let fcfg = self.module.target_config();
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let step_refs: Vec<_> = step_funcs
            .iter()
            .map(|&f| self.module.declare_func_in_func(f, &mut func))
            .collect();
        let copy_refs: Vec<_> = copy_funcs
            .iter()
            .map(|&f| self.module.declare_func_in_func(f, &mut func))
            .collect();
        let wgv = weights_data.map(|d| self.module.declare_data_in_func(d, &mut func));
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            let fail = b.create_block();
            b.append_block_param(fail, I32);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let p = b.block_params(entry).to_vec();
            let (pin, pout, arena) = (p[0], p[1], p[2]);

            // Branch to `fail(code)` when `bad` is set; continue in a fresh block.
            let check = |b: &mut FunctionBuilder, bad, code: i64| {
                let next = b.create_block();
                let c = b.ins().iconst(I32, code);
                b.ins().brif(bad, fail, &[BlockArg::Value(c)], next, &[]);
                b.switch_to_block(next);
                b.seal_block(next);
            };
            let trusted = MemFlagsData::trusted();
            for s in [pin, pout] {
                let bad = b.ins().icmp_imm_s(IntCC::Equal, s, 0);
                check(&mut b, bad, 1);
            }
            let load_all = |b: &mut FunctionBuilder,
                            base,
                            n: usize,
                            sizes: &dyn Fn(usize) -> usize|
             -> Vec<cranelift_codegen::ir::Value> {
                (0..n)
                    .map(|i| {
                        let v = b.ins().load(I64, trusted, base, (i * 8) as i32);
                        if sizes(i) > 0 {
                            let bad = b.ins().icmp_imm_s(IntCC::Equal, v, 0);
                            check(b, bad, 1);
                        }
                        v
                    })
                    .collect()
            };
            let in_size = |i: usize| {
                g.ty(kiln_ir::Value {
                    node: g.inputs[i],
                    slot: 0,
                })
                .byte_size()
                .unwrap_or(0)
            };
            let out_size = |i: usize| g.ty(g.outputs[i].1).byte_size().unwrap_or(0);
            let ins = load_all(&mut b, pin, g.inputs.len(), &in_size);
            let outs = load_all(&mut b, pout, g.outputs.len(), &out_size);
            let bad_null = b.ins().icmp_imm_s(IntCC::Equal, arena, 0);
            let low = b.ins().band_imm_s(arena, 63);
            let bad_align = b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
            let bad = b.ins().bor(bad_null, bad_align);
            check(&mut b, bad, 2);
            let wbase = if self.opts.external {
                let w = p[3];
                let bad_null = b.ins().icmp_imm_s(IntCC::Equal, w, 0);
                let low = b.ins().band_imm_s(w, 63);
                let bad_align = b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
                let bad = b.ins().bor(bad_null, bad_align);
                check(&mut b, bad, 3);
                Some(w)
            } else {
                wgv.map(|gv| b.ins().symbol_value(I64, gv))
            };

            let storage_ptr = |b: &mut FunctionBuilder, s: Storage| match s {
                Storage::Input(i) => ins[i],
                Storage::Output(i) => outs[i],
                Storage::Arena(k) => b.ins().iadd_imm_s(arena, lay.offsets[k] as i64),
                Storage::Weights(off) => match wbase {
                    Some(w) => b.ins().iadd_imm_s(w, off as i64),
                    None => arena,
                },
                // Never dereferenced: any valid pointer does.
                Storage::Empty => arena,
            };
            for (si, s) in l.steps.iter().enumerate() {
                let mut args = Vec::with_capacity(s.args.len());
                for (ai, a) in s.args.iter().enumerate() {
                    let v = match a {
                        Arg::Val(v) => storage_ptr(
                            &mut b,
                            lay.storage
                                .get(&l.root[v])
                                .copied()
                                .unwrap_or(Storage::Empty),
                        ),
                        Arg::Derived(d) => storage_ptr(
                            &mut b,
                            lay.derived
                                .get(d)
                                .map_or(Storage::Empty, |&o| Storage::Weights(o)),
                        ),
                        Arg::Scratch(_) => {
                            storage_ptr(&mut b, Storage::Arena(lay.scratch[&(si, ai)]))
                        }
                    };
                    args.push(v);
                }
                b.ins().call(step_refs[si], &args);
            }
            for (ci, (v, i)) in lay.copies.iter().enumerate() {
                let src = storage_ptr(
                    &mut b,
                    lay.storage
                        .get(&l.root[v])
                        .copied()
                        .unwrap_or(Storage::Empty),
                );
                b.ins().call(copy_refs[ci], &[src, outs[*i]]);
            }
            let ok = b.ins().iconst(I32, 0);
            b.ins().return_(&[ok]);
            b.switch_to_block(fail);
            b.seal_block(fail);
            let code = b.block_params(fail)[0];
            b.ins().return_(&[code]);
            b.finalize(fcfg);
        }
        if self.opts.want_clif {
            self.clif.push(KernelClif {
                symbol: symbol.clone(),
                nodes: vec![],
                clif: func.display().to_string(),
                func: id.as_u32(),
            });
        }
        if self.opts.compile {
            self.define(id, func, &symbol, "the entry point")?;
        }
        Ok(())
    }
}
