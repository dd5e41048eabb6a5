//! Code emission: one Cranelift function per distinct kernel, the two entry points, the weights data
//! object, and the object file.
//!
//! Parallel work is the caller's: `NAME_run_parallel` takes a `kiln_parallel` (a `parallel_for`
//! callback, its context and a part count) and hands each split kernel to it. A kernel whose step
//! is `split` takes two extra i64 parameters `(part, parts)` and computes only its share (see
//! `Kb::share`). Each such kernel gets a *trampoline* `(ctx, index)` matching the C type
//! `kiln_task_fn`: it loads the kernel's pointer operands and `parts` from `ctx`, a block the entry
//! fills on its stack, and calls the kernel as part `index`. Serial runs call the same kernel as
//! part 0 of 1, so there is one copy of every kernel and serial and parallel runs compute every
//! element with the same instructions: their results are bitwise identical.

use crate::builder::{CodegenCfg, Kb, Ptr};
use crate::lower::{Arg, Lowered};
use crate::memory::{Layout, Storage};
use crate::{BackendError, KernelClif};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, StackSlotData,
    StackSlotKind, UserFuncName,
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
    /// Every kernel function, in emission order, with the nodes it serves and its code size.
    pub kernels: Vec<crate::KernelReport>,
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

/// A kernel to emit: which node it serves, its name stem, its operands' read-only flags and body,
/// and whether it takes `(part, parts)`.
struct KernelReq<'a> {
    node: NodeId,
    kind: &'a str,
    ro: Vec<bool>,
    build: &'a dyn Fn(&mut Kb),
    split: bool,
}

/// Byte offsets of the `kiln_parallel` struct the header declares (LP64: a function pointer, a data
/// pointer, a `uint32_t`).
const PAR_FOR: i32 = 0;
const PAR_USER: i32 = 8;
const PAR_TASKS: i32 = 16;

/// `NAME_run_parallel`'s return code for a `kiln_parallel` with `tasks > 1` and no `parallel_for`.
const ERR_PARALLEL: i64 = 4;

struct Emitter<'a> {
    g: &'a Graph,
    module: ObjectModule,
    cfg: CodegenCfg,
    ctx: Context,
    fctx: FunctionBuilderContext,
    by_text: HashMap<String, FuncId>,
    /// Symbol of every kernel, by id (trampolines are named after their kernel).
    symbols: HashMap<FuncId, String>,
    /// The trampoline of every split kernel, by the kernel's id.
    trampolines: HashMap<FuncId, FuncId>,
    clif: Vec<KernelClif>,
    kernels: Vec<crate::KernelReport>,
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
        symbols: HashMap::new(),
        trampolines: HashMap::new(),
        clif: Vec::new(),
        kernels: Vec::new(),
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
            split: s.split,
        };
        let f = em.kernel(&req)?;
        if s.split && !em.trampolines.contains_key(&f) {
            let t = em.trampoline(f, s.args.len())?;
            em.trampolines.insert(f, t);
        }
        step_funcs.push(f);
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
            split: false,
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
    let kernels = std::mem::take(&mut em.kernels);
    if !opts.compile {
        // Declared functions were never defined; there is no object to write.
        return Ok(Emitted {
            object: Vec::new(),
            code_bytes,
            clif,
            kernels,
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
        kernels,
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
        let sig = self.sig(req.ro.len() + if req.split { 2 } else { 0 });
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
            let n = req.ro.len();
            let part = req.split.then(|| (params[n], params[n + 1]));
            let mut kb = Kb {
                b,
                cfg: self.cfg,
                args,
                part,
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
            let sym = &self.symbols[&id];
            if let Some(k) = self.kernels.iter_mut().find(|k| &k.symbol == sym) {
                k.nodes.push(label.clone());
            }
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
        self.symbols.insert(id, symbol.clone());
        self.kernels.push(crate::KernelReport {
            symbol: symbol.clone(),
            nodes: vec![label.clone()],
            code_bytes: 0,
        });
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
            let bytes = c.code_info().total_size as usize;
            self.code_bytes += bytes;
            if let Some(k) = self.kernels.iter_mut().find(|k| k.symbol == symbol) {
                k.code_bytes = bytes;
            }
        }
        Ok(())
    }

    /// The trampoline of a split kernel with `nargs` pointer operands: `void (void *ctx, uint32_t
    /// index)`, the C type `kiln_task_fn`. `ctx` holds the `nargs` pointers, then `parts` (all
    /// 8-byte words); the kernel runs as part `index` of `parts`.
    fn trampoline(&mut self, kernel: FuncId, nargs: usize) -> Result<FuncId, BackendError> {
        let mut sig = self.sig(1);
        sig.params.push(AbiParam::new(I32));
        let symbol = format!("{}_task", self.symbols[&kernel]);
        let id = self
            .module
            .declare_function(&symbol, Linkage::Local, &sig)
            .map_err(|e| BackendError::Internal(format!("declare {symbol}: {e}")))?;
        let fcfg = self.module.target_config();
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let kref = self.module.declare_func_in_func(kernel, &mut func);
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let p = b.block_params(entry).to_vec();
            let (ctx, index) = (p[0], p[1]);
            let words: Vec<_> = (0..=nargs)
                .map(|k| {
                    b.ins()
                        .load(I64, MemFlagsData::trusted(), ctx, (k * 8) as i32)
                })
                .collect();
            let mut args = words[..nargs].to_vec();
            // `index` is a C `uint32_t`: only its low 32 bits are defined.
            args.push(b.ins().uextend(I64, index));
            args.push(words[nargs]);
            b.ins().call(kref, &args);
            b.ins().return_(&[]);
            b.finalize(fcfg);
        }
        self.finish_entry(id, func, &symbol, "a parallel task")?;
        Ok(id)
    }

    /// Keeps the CLIF of an entry point or trampoline (no nodes) and compiles it.
    fn finish_entry(
        &mut self,
        id: FuncId,
        func: Function,
        symbol: &str,
        label: &str,
    ) -> Result<(), BackendError> {
        if self.opts.want_clif {
            self.clif.push(KernelClif {
                symbol: symbol.to_string(),
                nodes: vec![],
                clif: func.display().to_string(),
                func: id.as_u32(),
            });
        }
        if self.opts.compile {
            self.define(id, func, symbol, label)?;
        }
        Ok(())
    }

    /// `int NAME_run(const NAME_inputs *in, NAME_outputs *out, void *arena[, const void
    /// *weights])`: `NAME_run_parallel` with `par = NULL`.
    fn serial_entry(&mut self, run: FuncId, parallel: FuncId) -> Result<(), BackendError> {
        let params = if self.opts.external { 4 } else { 3 };
        let mut sig = self.sig(params);
        sig.returns.push(AbiParam::new(I32));
        let symbol = format!("{}_run", self.opts.name);
        let fcfg = self.module.target_config();
        let mut func = Function::with_name_signature(UserFuncName::user(0, run.as_u32()), sig);
        let pref = self.module.declare_func_in_func(parallel, &mut func);
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let mut args = b.block_params(entry).to_vec();
            args.push(b.ins().iconst(I64, 0));
            let call = b.ins().call(pref, &args);
            let rc = b.inst_results(call)[0];
            b.ins().return_(&[rc]);
            b.finalize(fcfg);
        }
        self.finish_entry(run, func, &symbol, "the entry point")
    }

    /// `int NAME_run_parallel(const NAME_inputs *in, NAME_outputs *out, void *arena[, const void
    /// *weights], const kiln_parallel *par)`, then `NAME_run` (declared first, so the symbol
    /// table lists `NAME_run` first).
    fn entry(
        &mut self,
        l: &Lowered,
        lay: &Layout,
        step_funcs: &[FuncId],
        copy_funcs: &[FuncId],
        weights_data: Option<cranelift_module::DataId>,
    ) -> Result<(), BackendError> {
        let g = self.g;
        let nparams = if self.opts.external { 4 } else { 3 };
        let mut run_sig = self.sig(nparams);
        run_sig.returns.push(AbiParam::new(I32));
        let run_symbol = format!("{}_run", self.opts.name);
        let run_id = self
            .module
            .declare_function(&run_symbol, Linkage::Export, &run_sig)
            .map_err(|e| BackendError::Internal(format!("declare {run_symbol}: {e}")))?;
        let mut sig = self.sig(nparams + 1);
        sig.returns.push(AbiParam::new(I32));
        let symbol = format!("{}_run_parallel", self.opts.name);
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
        let mut tramp_ids: Vec<(FuncId, FuncId)> =
            self.trampolines.iter().map(|(&k, &t)| (k, t)).collect();
        tramp_ids.sort_by_key(|(k, _)| k.as_u32());
        let tramp_refs: HashMap<FuncId, _> = tramp_ids
            .into_iter()
            .map(|(k, t)| (k, self.module.declare_func_in_func(t, &mut func)))
            .collect();
        let wgv = weights_data.map(|d| self.module.declare_data_in_func(d, &mut func));
        // `void parallel_for(void *user, uint32_t count, kiln_task_fn task, void *task_ctx)`.
        let mut pf_sig = self.sig(0);
        pf_sig.params.extend([
            AbiParam::new(I64),
            AbiParam::new(I32),
            AbiParam::new(I64),
            AbiParam::new(I64),
        ]);
        let pf_sigref = func.import_signature(pf_sig);
        // One task context serves every split step in turn: `parallel_for` returns only when all
        // tasks are done, so the next step may overwrite it.
        let ctx_words = l
            .steps
            .iter()
            .filter(|s| s.split)
            .map(|s| s.args.len() + 1)
            .max();
        let ctx_slot = ctx_words.map(|w| {
            func.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (w * 8) as u32,
                4,
            ))
        });
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            let fail = b.create_block();
            b.append_block_param(fail, I32);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let p = b.block_params(entry).to_vec();
            let (pin, pout, arena, par) = (p[0], p[1], p[2], p[nparams]);

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

            // The parallel context: `(on, parallel_for, user, parts)`, `on` when `par` asks for
            // more than one part. A `par` that asks for parts but has no callback is refused
            // before any work starts, like every other bad argument.
            let after = b.create_block();
            for ty in [I8, I64, I64, I64] {
                b.append_block_param(after, ty);
            }
            let read_par = b.create_block();
            let off = b.ins().iconst(I8, 0);
            let zero = b.ins().iconst(I64, 0);
            let one = b.ins().iconst(I64, 1);
            let serial = [off, zero, zero, one].map(BlockArg::Value);
            b.ins().brif(par, read_par, &[], after, &serial);
            b.switch_to_block(read_par);
            b.seal_block(read_par);
            let tasks = b.ins().uload32(trusted, par, PAR_TASKS);
            let many = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, tasks, 1);
            let pfn = b.ins().load(I64, trusted, par, PAR_FOR);
            let no_fn = b.ins().icmp_imm_s(IntCC::Equal, pfn, 0);
            let bad = b.ins().band(many, no_fn);
            check(&mut b, bad, ERR_PARALLEL);
            let user = b.ins().load(I64, trusted, par, PAR_USER);
            b.ins()
                .jump(after, &[many, pfn, user, tasks].map(BlockArg::Value));
            b.switch_to_block(after);
            b.seal_block(after);
            let pv = b.block_params(after).to_vec();
            let (on, pfn, user, parts) = (pv[0], pv[1], pv[2], pv[3]);
            let ctx = ctx_slot.map(|slot| b.ins().stack_addr(I64, slot, 0));

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
                if !s.split {
                    b.ins().call(step_refs[si], &args);
                    continue;
                }
                let (Some(ctx), Some(&tramp)) = (ctx, tramp_refs.get(&step_funcs[si])) else {
                    unreachable!("a split step has a trampoline and a context slot");
                };
                let (pblock, sblock, join) = (b.create_block(), b.create_block(), b.create_block());
                b.ins().brif(on, pblock, &[], sblock, &[]);
                b.switch_to_block(pblock);
                b.seal_block(pblock);
                for (k, &a) in args.iter().enumerate() {
                    b.ins().store(trusted, a, ctx, (k * 8) as i32);
                }
                b.ins().store(trusted, parts, ctx, (args.len() * 8) as i32);
                let task = b.ins().func_addr(I64, tramp);
                let count = b.ins().ireduce(I32, parts);
                b.ins()
                    .call_indirect(pf_sigref, pfn, &[user, count, task, ctx]);
                b.ins().jump(join, &[]);
                b.switch_to_block(sblock);
                b.seal_block(sblock);
                args.push(zero);
                args.push(one);
                b.ins().call(step_refs[si], &args);
                b.ins().jump(join, &[]);
                b.switch_to_block(join);
                b.seal_block(join);
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
        self.finish_entry(id, func, &symbol, "the entry point")?;
        self.serial_entry(run_id, id)
    }
}
