//! The `recognize-*` passes on graphs written the way exporters write them (built as real ONNX with
//! `kiln_frontend::builder` and imported): a before/after snapshot of each, and a numerical check that
//! the graph computes the same thing before and after (both run through `kiln_ir::interpret` on the
//! same pseudo-random inputs).

// The constants are spelled as exporters write them (`1.4142135`, `0.7978845608`), not as `std`'s.
#![allow(clippy::approx_constant, clippy::excessive_precision)]

use kiln_frontend::builder::{attr, elem, ModelBuilder};
use kiln_frontend::onnx::AttributeProto;
use kiln_frontend::{import_bytes, ImportOptions};
use kiln_ir::{interpret, print, verify, DType, Graph, PrintOptions, Tensor};
use kiln_passes::{DeadNodes, Fuel, Pass, RecognizeGelu, RecognizeLayerNorm, RecognizeSoftmax};

/// Builds an exporter-style model: nodes named `/{scope}/{Op}_{n}` as PyTorch names them, scalar
/// constants as rank-0 initializers.
struct Model {
    b: ModelBuilder,
    scope: &'static str,
    n: usize,
}

impl Model {
    fn new(scope: &'static str, opset: i64) -> Model {
        Model {
            b: ModelBuilder::new(scope).opset("", opset),
            scope,
            n: 0,
        }
    }

    fn input(&mut self, name: &str, dims: &[i64]) -> String {
        self.b.input(name, elem::FLOAT, dims);
        name.to_string()
    }

    fn output(&mut self, v: &str, dims: &[i64]) {
        self.b.output(v, elem::FLOAT, dims);
    }

    fn op_attrs(&mut self, op: &str, ins: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.n += 1;
        let out = format!("/{}/{op}_{}_output_0", self.scope, self.n);
        let name = format!("/{}/{op}_{}", self.scope, self.n);
        self.b.node_named(&name, "", op, ins, &[&out], attrs);
        out
    }

    fn op(&mut self, op: &str, ins: &[&str]) -> String {
        self.op_attrs(op, ins, vec![])
    }

    fn scalar(&mut self, v: f32) -> String {
        self.tensor(&[], &[v])
    }

    fn tensor(&mut self, dims: &[i64], data: &[f32]) -> String {
        self.n += 1;
        let name = format!("/{}/Constant_{}_output_0", self.scope, self.n);
        self.b.initializer_f32(&name, dims, data);
        name
    }

    fn ints(&mut self, data: &[i64]) -> String {
        self.n += 1;
        let name = format!("/{}/Constant_{}_output_0", self.scope, self.n);
        self.b.initializer_i64(&name, &[data.len() as i64], data);
        name
    }

    fn graph(&self) -> Graph {
        import_bytes(&self.b.to_bytes(), None, &ImportOptions::default())
            .expect("test model imports")
            .graph
    }
}

fn text(g: &Graph) -> String {
    print(g, PrintOptions::default())
}

/// Runs `pass` then `dce` (which drops the constants only the pattern read), verifying the result.
fn rewrite(pass: &dyn Pass, g: &mut Graph) -> bool {
    let changed = pass.run(g, &mut Fuel::unlimited()).expect("pass runs");
    DeadNodes.run(g, &mut Fuel::unlimited()).expect("dce runs");
    verify(g).expect("graph verifies after the rewrite");
    changed
}

/// Names of the ops in the graph, constants and inputs left out, in topological order.
fn ops(g: &Graph) -> Vec<&'static str> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|id| g.node(id).op.name())
        .filter(|n| !matches!(*n, "const" | "input"))
        .collect()
}

/// xorshift64*: a fixed stream of pseudo-random f32 values in `[lo, hi)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// One pseudo-random f32 tensor per graph input.
fn random_inputs(g: &Graph, seed: u64, lo: f32, hi: f32) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    g.inputs
        .iter()
        .map(|&id| {
            let ty = &g.node(id).outputs[0].ty;
            assert_eq!(ty.dtype, DType::F32);
            let dims = ty.dims().unwrap();
            let vals: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|_| rng.next(lo, hi))
                .collect();
            Tensor::from_f32(dims, &vals)
        })
        .collect()
}

/// Both graphs give the same outputs on the same inputs, to 1e-5 relative error. The absolute
/// 1e-6 term covers outputs near zero, where the decomposed form itself loses relative accuracy
/// (`1 + erf(x / sqrt(2))` cancels for negative `x`, each op rounding to f32).
fn assert_same(before: &Graph, after: &Graph, lo: f32, hi: f32) {
    for seed in [1, 2, 3] {
        let inputs = random_inputs(before, 0x9e37_79b9_7f4a_7c15 ^ seed, lo, hi);
        let want = interpret(before, &inputs).unwrap();
        let got = interpret(after, &inputs).unwrap();
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.ty(), g.ty());
            for (i, (a, b)) in g.to_f32_vec().iter().zip(w.to_f32_vec()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs() + 1e-6,
                    "element {i}: after {a}, before {b}"
                );
            }
        }
    }
}

/// Rewrites with `pass`, snapshots before and after, checks the numerics and that the ops left are
/// `want_ops`.
fn check(pass: &dyn Pass, m: &Model, snap: &str, want_ops: &[&str], lo: f32, hi: f32) {
    let before = m.graph();
    let mut after = before.clone();
    assert!(
        rewrite(pass, &mut after),
        "{snap}: the pattern was not found"
    );
    insta::assert_snapshot!(format!("{snap}_before"), text(&before));
    insta::assert_snapshot!(format!("{snap}_after"), text(&after));
    assert_eq!(ops(&after), want_ops, "{snap}");
    assert_same(&before, &after, lo, hi);
}

/// The pass finds nothing to do: the graph is unchanged.
fn check_unchanged(pass: &dyn Pass, m: &Model) {
    let before = m.graph();
    let mut after = before.clone();
    assert!(!pass.run(&mut after, &mut Fuel::unlimited()).unwrap());
    assert_eq!(text(&before), text(&after));
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// `torch.nn.LayerNorm` exported below opset 17: mean, Sub, Pow 2, mean, Add eps, Sqrt, Div, Mul
/// gamma, Add beta.
fn torch_layer_norm(opset: i64) -> Model {
    let mut m = Model::new("ln", opset);
    let x = m.input("x", &[2, 3, 8]);
    let axes = vec![attr::ints("axes", &[-1])];
    let mean = m.op_attrs("ReduceMean", &[&x], axes.clone());
    let d = m.op("Sub", &[&x, &mean]);
    let two = m.scalar(2.0);
    let sq = m.op("Pow", &[&d, &two]);
    let var = m.op_attrs("ReduceMean", &[&sq], axes);
    let eps = m.scalar(1e-5);
    let ve = m.op("Add", &[&var, &eps]);
    let s = m.op("Sqrt", &[&ve]);
    let n = m.op("Div", &[&d, &s]);
    let gamma: Vec<f32> = (0..8).map(|i| 0.5 + 0.25 * i as f32).collect();
    let beta: Vec<f32> = (0..8).map(|i| 0.1 * i as f32 - 0.3).collect();
    let gamma = m.tensor(&[8], &gamma);
    let beta = m.tensor(&[8], &beta);
    let ng = m.op("Mul", &[&n, &gamma]);
    let y = m.op("Add", &[&ng, &beta]);
    m.output(&y, &[2, 3, 8]);
    m
}

#[test]
fn layer_norm_torch() {
    let m = torch_layer_norm(13);
    check(
        &RecognizeLayerNorm,
        &m,
        "layer_norm_torch",
        &["layer_norm"],
        -3.0,
        3.0,
    );
}

#[test]
fn layer_norm_value_by_hand() {
    // One row [1, 2, 3, 4]: mean 2.5, variance 1.25, no affine part.
    let mut m = Model::new("ln", 13);
    let x = m.input("x", &[1, 4]);
    let axes = vec![attr::ints("axes", &[1])];
    let mean = m.op_attrs("ReduceMean", &[&x], axes.clone());
    let d = m.op("Sub", &[&x, &mean]);
    let sq = m.op("Mul", &[&d, &d]);
    let var = m.op_attrs("ReduceMean", &[&sq], axes);
    let eps = m.scalar(0.0);
    let ve = m.op("Add", &[&eps, &var]);
    let s = m.op("Sqrt", &[&ve]);
    let y = m.op("Div", &[&d, &s]);
    m.output(&y, &[1, 4]);
    let mut g = m.graph();
    assert!(rewrite(&RecognizeLayerNorm, &mut g));
    assert_eq!(ops(&g), ["layer_norm"]);
    let out = interpret(&g, &[Tensor::from_f32(vec![1, 4], &[1.0, 2.0, 3.0, 4.0])]).unwrap();
    let sd = 1.25f64.sqrt();
    let want: Vec<f64> = [-1.5, -0.5, 0.5, 1.5].iter().map(|d| d / sd).collect();
    for (a, b) in out[0].to_f32_vec().iter().zip(want) {
        assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
    }
}

/// Keras/tf2onnx style: `d * d`, eps first, Reciprocal then Mul, gamma as a `[1,1,C]` constant on
/// the left, no beta; opset 18 (ReduceMean takes its axes as an input).
#[test]
fn layer_norm_reciprocal_opset18() {
    let mut m = Model::new("norm", 18);
    let x = m.input("x", &[2, 3, 8]);
    let axes = m.ints(&[-1]);
    let mean = m.op("ReduceMean", &[&x, &axes]);
    let d = m.op("Sub", &[&x, &mean]);
    let sq = m.op("Mul", &[&d, &d]);
    let var = m.op("ReduceMean", &[&sq, &axes]);
    let eps = m.scalar(1e-6);
    let ve = m.op("Add", &[&eps, &var]);
    let s = m.op("Sqrt", &[&ve]);
    let inv = m.op("Reciprocal", &[&s]);
    let n = m.op("Mul", &[&inv, &d]);
    let gamma: Vec<f32> = (0..8).map(|i| 1.0 - 0.125 * i as f32).collect();
    let gamma = m.tensor(&[1, 1, 8], &gamma);
    let y = m.op("Mul", &[&gamma, &n]);
    m.output(&y, &[2, 3, 8]);
    check(
        &RecognizeLayerNorm,
        &m,
        "layer_norm_reciprocal",
        &["layer_norm"],
        -3.0,
        3.0,
    );
}

/// Normalized over the two trailing axes, gamma `[4,6]`, beta `[6]` (broadcast to `[4,6]`).
#[test]
fn layer_norm_two_axes() {
    let mut m = Model::new("ln2", 13);
    let x = m.input("x", &[2, 4, 6]);
    let axes = vec![attr::ints("axes", &[-2, -1])];
    let mean = m.op_attrs("ReduceMean", &[&x], axes.clone());
    let d = m.op("Sub", &[&x, &mean]);
    let two = m.scalar(2.0);
    let sq = m.op("Pow", &[&d, &two]);
    let var = m.op_attrs("ReduceMean", &[&sq], axes);
    let eps = m.scalar(1e-5);
    let ve = m.op("Add", &[&var, &eps]);
    let s = m.op("Sqrt", &[&ve]);
    let n = m.op("Div", &[&d, &s]);
    let gamma: Vec<f32> = (0..24).map(|i| 0.1 * i as f32).collect();
    let beta: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let gamma = m.tensor(&[4, 6], &gamma);
    let beta = m.tensor(&[6], &beta);
    let ng = m.op("Mul", &[&gamma, &n]);
    let y = m.op("Add", &[&beta, &ng]);
    m.output(&y, &[2, 4, 6]);
    check(
        &RecognizeLayerNorm,
        &m,
        "layer_norm_two_axes",
        &["layer_norm"],
        -3.0,
        3.0,
    );
}

#[test]
fn layer_norm_partly_matched() {
    // `x - mean` is also a graph output: the mean and the subtraction have to stay, and what follows
    // is an RMSNorm of `x - mean` (scaled by gamma; the bias stays an add).
    let mut m = torch_layer_norm(13);
    m.output("/ln/Sub_2_output_0", &[2, 3, 8]);
    let before = m.graph();
    let mut g = before.clone();
    assert!(rewrite(&RecognizeLayerNorm, &mut g));
    assert_eq!(ops(&g), ["reduce_mean", "sub", "rms_norm", "add"]);
    assert_same(&before, &g, -3.0, 3.0);

    // Cubed deviation: not a variance.
    let mut m = Model::new("ln", 13);
    let x = m.input("x", &[2, 8]);
    let axes = vec![attr::ints("axes", &[-1])];
    let mean = m.op_attrs("ReduceMean", &[&x], axes.clone());
    let d = m.op("Sub", &[&x, &mean]);
    let three = m.scalar(3.0);
    let sq = m.op("Pow", &[&d, &three]);
    let var = m.op_attrs("ReduceMean", &[&sq], axes);
    let eps = m.scalar(1e-5);
    let ve = m.op("Add", &[&var, &eps]);
    let s = m.op("Sqrt", &[&ve]);
    let y = m.op("Div", &[&d, &s]);
    m.output(&y, &[2, 8]);
    check_unchanged(&RecognizeLayerNorm, &m);

    // The variance over more axes than the mean: not a LayerNorm, but an RMSNorm (over both axes)
    // of `x - mean`.
    let mut m = Model::new("ln", 13);
    let x = m.input("x", &[2, 3, 8]);
    let mean = m.op_attrs("ReduceMean", &[&x], vec![attr::ints("axes", &[-1])]);
    let d = m.op("Sub", &[&x, &mean]);
    let sq = m.op("Mul", &[&d, &d]);
    let var = m.op_attrs("ReduceMean", &[&sq], vec![attr::ints("axes", &[-2, -1])]);
    let eps = m.scalar(1e-5);
    let ve = m.op("Add", &[&var, &eps]);
    let s = m.op("Sqrt", &[&ve]);
    let y = m.op("Div", &[&d, &s]);
    m.output(&y, &[2, 3, 8]);
    let before = m.graph();
    let mut g = before.clone();
    assert!(rewrite(&RecognizeLayerNorm, &mut g));
    assert_eq!(ops(&g), ["reduce_mean", "sub", "rms_norm"]);
    assert!(
        text(&g).contains("rms_norm(%2) {axis=1, epsilon=1e-5}"),
        "{}",
        text(&g)
    );
    assert_same(&before, &g, -3.0, 3.0);
}

/// HF LLaMA/T5 RMSNorm exported in f32: `w * (x32 * (1 / sqrt(mean(x32^2) + eps))).to(f32)` where
/// `x32 = x.to(f32)`: both casts change nothing.
#[test]
fn rms_norm_llama() {
    let mut m = Model::new("norm", 13);
    let x0 = m.input("x", &[2, 3, 8]);
    let to_f32 = || vec![attr::int("to", elem::FLOAT as i64)];
    let x = m.op_attrs("Cast", &[&x0], to_f32());
    let two = m.scalar(2.0);
    let sq = m.op("Pow", &[&x, &two]);
    let var = m.op_attrs("ReduceMean", &[&sq], vec![attr::ints("axes", &[-1])]);
    let eps = m.scalar(1e-6);
    let ve = m.op("Add", &[&var, &eps]);
    let s = m.op("Sqrt", &[&ve]);
    let one = m.scalar(1.0);
    let inv = m.op("Div", &[&one, &s]);
    let n = m.op("Mul", &[&x, &inv]);
    let n = m.op_attrs("Cast", &[&n], to_f32());
    let w: Vec<f32> = (0..8).map(|i| 1.5 - 0.2 * i as f32).collect();
    let w = m.tensor(&[8], &w);
    let y = m.op("Mul", &[&w, &n]);
    m.output(&y, &[2, 3, 8]);
    check(
        &RecognizeLayerNorm,
        &m,
        "rms_norm_llama",
        &["cast", "rms_norm"],
        -3.0,
        3.0,
    );
}

#[test]
fn rms_norm_div_without_weight() {
    let mut m = Model::new("norm", 13);
    let x = m.input("x", &[4, 16]);
    let sq = m.op("Mul", &[&x, &x]);
    let var = m.op_attrs("ReduceMean", &[&sq], vec![attr::ints("axes", &[1])]);
    let eps = m.scalar(1e-5);
    let ve = m.op("Add", &[&eps, &var]);
    let s = m.op("Sqrt", &[&ve]);
    let y = m.op("Div", &[&x, &s]);
    m.output(&y, &[4, 16]);
    check(
        &RecognizeLayerNorm,
        &m,
        "rms_norm_div",
        &["rms_norm"],
        -3.0,
        3.0,
    );
}

// ---------------------------------------------------------------------------------------------
// GELU

/// The erf GELU as PyTorch exports `nn.GELU()` (and the BERT family), after a Linear layer so `x`
/// is itself an `Add` of a bias.
#[test]
fn gelu_erf_torch() {
    let mut m = Model::new("mlp", 13);
    let a = m.input("a", &[2, 4]);
    let w: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
    let w = m.tensor(&[4, 8], &w);
    let bias: Vec<f32> = (0..8).map(|i| 0.05 * i as f32).collect();
    let bias = m.tensor(&[8], &bias);
    let mm = m.op("MatMul", &[&a, &w]);
    let x = m.op("Add", &[&bias, &mm]);
    let sqrt2 = m.scalar(1.414_213_5);
    let one = m.scalar(1.0);
    let half = m.scalar(0.5);
    let div = m.op("Div", &[&x, &sqrt2]);
    let erf = m.op("Erf", &[&div]);
    let add = m.op("Add", &[&erf, &one]);
    let mul = m.op("Mul", &[&x, &add]);
    let y = m.op("Mul", &[&mul, &half]);
    m.output(&y, &[2, 8]);
    check(
        &RecognizeGelu,
        &m,
        "gelu_erf_torch",
        &["matmul", "add", "gelu"],
        -3.0,
        3.0,
    );
}

/// `(0.5 * x) * (1 + erf(x * 0.7071))`: the half first, constants on the left.
#[test]
fn gelu_erf_half_first() {
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[3, 5]);
    let c = m.scalar(0.707_106_77);
    let one = m.scalar(1.0);
    let half = m.scalar(0.5);
    let h = m.op("Mul", &[&half, &x]);
    let t = m.op("Mul", &[&x, &c]);
    let erf = m.op("Erf", &[&t]);
    let add = m.op("Add", &[&one, &erf]);
    let y = m.op("Mul", &[&h, &add]);
    m.output(&y, &[3, 5]);
    check(
        &RecognizeGelu,
        &m,
        "gelu_erf_half_first",
        &["gelu"],
        -4.0,
        4.0,
    );
}

#[test]
fn gelu_value_by_hand() {
    // gelu(1) = 0.5 * (1 + erf(1 / sqrt(2))) = Phi(1) = 0.841344746...; gelu(-1) = 1 - 0.8413... - 1.
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[2]);
    let sqrt2 = m.scalar(1.414_213_5);
    let one = m.scalar(1.0);
    let half = m.scalar(0.5);
    let div = m.op("Div", &[&x, &sqrt2]);
    let erf = m.op("Erf", &[&div]);
    let add = m.op("Add", &[&erf, &one]);
    let mul = m.op("Mul", &[&x, &add]);
    let y = m.op("Mul", &[&mul, &half]);
    m.output(&y, &[2]);
    let mut g = m.graph();
    assert!(rewrite(&RecognizeGelu, &mut g));
    assert_eq!(ops(&g), ["gelu"]);
    let out = interpret(&g, &[Tensor::from_f32(vec![2], &[1.0, -1.0])]).unwrap();
    let v = out[0].to_f32_vec();
    assert!((v[0] - 0.841_344_7).abs() < 1e-6, "{}", v[0]);
    assert!((v[1] + 0.158_655_26).abs() < 1e-6, "{}", v[1]);
}

/// GPT-2's `gelu_new` as exported: `0.5 * x * (1 + tanh(0.7979 * (x + 0.044715 * x^3)))` with
/// `Pow(x, 3)`.
#[test]
fn gelu_tanh_gpt2() {
    let mut m = Model::new("h.0", 13);
    let x = m.input("x", &[2, 6]);
    let half = m.scalar(0.5);
    let three = m.scalar(3.0);
    let c = m.scalar(0.044715);
    let k = m.scalar(0.797_884_6);
    let one = m.scalar(1.0);
    let h = m.op("Mul", &[&x, &half]);
    let x3 = m.op("Pow", &[&x, &three]);
    let cx3 = m.op("Mul", &[&x3, &c]);
    let inner = m.op("Add", &[&x, &cx3]);
    let z = m.op("Mul", &[&inner, &k]);
    let t = m.op("Tanh", &[&z]);
    let t1 = m.op("Add", &[&t, &one]);
    let y = m.op("Mul", &[&h, &t1]);
    m.output(&y, &[2, 6]);
    check(&RecognizeGelu, &m, "gelu_tanh_gpt2", &["gelu"], -4.0, 4.0);
}

/// The tanh form with `x * x * x`, constants on the left and the half last.
#[test]
fn gelu_tanh_cubed_by_muls() {
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[16]);
    let half = m.scalar(0.5);
    let c = m.scalar(0.044715);
    let k = m.scalar(0.797_884_56);
    let one = m.scalar(1.0);
    let x2 = m.op("Mul", &[&x, &x]);
    let x3 = m.op("Mul", &[&x2, &x]);
    let cx3 = m.op("Mul", &[&c, &x3]);
    let inner = m.op("Add", &[&cx3, &x]);
    let z = m.op("Mul", &[&k, &inner]);
    let t = m.op("Tanh", &[&z]);
    let t1 = m.op("Add", &[&one, &t]);
    let xt = m.op("Mul", &[&t1, &x]);
    let y = m.op("Mul", &[&half, &xt]);
    m.output(&y, &[16]);
    check(&RecognizeGelu, &m, "gelu_tanh_muls", &["gelu"], -4.0, 4.0);
}

/// HF `FastGELUActivation`: `0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))`.
#[test]
fn gelu_tanh_fast() {
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[16]);
    let half = m.scalar(0.5);
    let c = m.scalar(0.044715);
    let k = m.scalar(0.797_884_56);
    let one = m.scalar(1.0);
    let h = m.op("Mul", &[&x, &half]);
    let kx = m.op("Mul", &[&x, &k]);
    let cx = m.op("Mul", &[&x, &c]);
    let cxx = m.op("Mul", &[&cx, &x]);
    let p = m.op("Add", &[&cxx, &one]);
    let z = m.op("Mul", &[&kx, &p]);
    let t = m.op("Tanh", &[&z]);
    let t1 = m.op("Add", &[&t, &one]);
    let y = m.op("Mul", &[&h, &t1]);
    m.output(&y, &[16]);
    check(&RecognizeGelu, &m, "gelu_tanh_fast", &["gelu"], -4.0, 4.0);
}

/// `x * sigmoid(1.5958 * (x + 0.044715 x^3))`, the tanh form written with a sigmoid.
#[test]
fn gelu_sigmoid_form() {
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[16]);
    let three = m.scalar(3.0);
    let c = m.scalar(0.044715);
    let k2 = m.scalar(1.595_769_1);
    let x3 = m.op("Pow", &[&x, &three]);
    let cx3 = m.op("Mul", &[&x3, &c]);
    let inner = m.op("Add", &[&x, &cx3]);
    let z = m.op("Mul", &[&inner, &k2]);
    let s = m.op("Sigmoid", &[&z]);
    let y = m.op("Mul", &[&x, &s]);
    m.output(&y, &[16]);
    check(&RecognizeGelu, &m, "gelu_sigmoid", &["gelu"], -4.0, 4.0);
}

fn erf_gelu(half_value: f32, erf_is_output: bool) -> Model {
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[8]);
    let sqrt2 = m.scalar(1.414_213_5);
    let one = m.scalar(1.0);
    let half = m.scalar(half_value);
    let div = m.op("Div", &[&x, &sqrt2]);
    let erf = m.op("Erf", &[&div]);
    let add = m.op("Add", &[&erf, &one]);
    let mul = m.op("Mul", &[&x, &add]);
    let y = m.op("Mul", &[&mul, &half]);
    m.output(&y, &[8]);
    if erf_is_output {
        m.output(&erf, &[8]);
    }
    m
}

#[test]
fn gelu_not_matched() {
    // The control: the same graph with the right constant and no extra reader is matched.
    let mut g = erf_gelu(0.5, false).graph();
    assert!(rewrite(&RecognizeGelu, &mut g));
    // 0.6 is not 0.5.
    check_unchanged(&RecognizeGelu, &erf_gelu(0.6, false));
    // The erf is also a graph output.
    check_unchanged(&RecognizeGelu, &erf_gelu(0.5, true));
    // QuickGELU, `x * sigmoid(1.702 x)`, is another function.
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[8]);
    let k = m.scalar(1.702);
    let z = m.op("Mul", &[&x, &k]);
    let s = m.op("Sigmoid", &[&z]);
    let y = m.op("Mul", &[&x, &s]);
    m.output(&y, &[8]);
    check_unchanged(&RecognizeGelu, &m);
    // A `[1,8]` constant broadcasts `x: [8]` to `[1,8]`: the intermediates do not have `x`'s type.
    let mut m = Model::new("act", 13);
    let x = m.input("x", &[8]);
    let sqrt2 = m.tensor(&[1, 1], &[1.414_213_5]);
    let one = m.scalar(1.0);
    let half = m.scalar(0.5);
    let div = m.op("Div", &[&x, &sqrt2]);
    let erf = m.op("Erf", &[&div]);
    let add = m.op("Add", &[&erf, &one]);
    let mul = m.op("Mul", &[&x, &add]);
    let y = m.op("Mul", &[&mul, &half]);
    m.output(&y, &[1, 8]);
    check_unchanged(&RecognizeGelu, &m);
}

// ---------------------------------------------------------------------------------------------
// Softmax

/// `torch.softmax` written out by hand, opset 13: ReduceMax (axes attribute), Sub, Exp, ReduceSum
/// (axes input), Div.
#[test]
fn softmax_with_max() {
    let mut m = Model::new("attn", 13);
    let x = m.input("x", &[2, 3, 7]);
    let mx = m.op_attrs("ReduceMax", &[&x], vec![attr::ints("axes", &[-1])]);
    let s = m.op("Sub", &[&x, &mx]);
    let e = m.op("Exp", &[&s]);
    let axes = m.ints(&[-1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[2, 3, 7]);
    check(
        &RecognizeSoftmax,
        &m,
        "softmax_with_max",
        &["softmax"],
        -5.0,
        5.0,
    );
}

#[test]
fn softmax_value_by_hand() {
    // softmax([0, ln 3]) = [1/4, 3/4].
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[1, 2]);
    let e = m.op("Exp", &[&x]);
    let axes = m.ints(&[1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[1, 2]);
    let mut g = m.graph();
    assert!(rewrite(&RecognizeSoftmax, &mut g));
    assert_eq!(ops(&g), ["softmax"]);
    let out = interpret(&g, &[Tensor::from_f32(vec![1, 2], &[0.0, 3f32.ln()])]).unwrap();
    let v = out[0].to_f32_vec();
    assert!(
        (v[0] - 0.25).abs() < 1e-6 && (v[1] - 0.75).abs() < 1e-6,
        "{v:?}"
    );
}

/// No max subtraction, a middle axis, and `Mul(Reciprocal(sum), e)`.
#[test]
fn softmax_middle_axis_reciprocal() {
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[2, 5, 3]);
    let e = m.op("Exp", &[&x]);
    let axes = m.ints(&[1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let r = m.op("Reciprocal", &[&sum]);
    let y = m.op("Mul", &[&r, &e]);
    m.output(&y, &[2, 5, 3]);
    check(
        &RecognizeSoftmax,
        &m,
        "softmax_middle_axis",
        &["softmax"],
        -5.0,
        5.0,
    );
}

/// Over the two trailing axes: the flattened (legacy) softmax.
#[test]
fn softmax_trailing_axes() {
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[2, 3, 4]);
    let mx = m.op_attrs("ReduceMax", &[&x], vec![attr::ints("axes", &[1, 2])]);
    let s = m.op("Sub", &[&x, &mx]);
    let e = m.op("Exp", &[&s]);
    let axes = m.ints(&[-2, -1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[2, 3, 4]);
    check(
        &RecognizeSoftmax,
        &m,
        "softmax_trailing_axes",
        &["softmax"],
        -5.0,
        5.0,
    );
}

/// The maximum over every axis, the sum over the last: the shift is the same along each row, and the
/// softmax ignores it.
#[test]
fn softmax_global_max() {
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[3, 4]);
    let mx = m.op_attrs("ReduceMax", &[&x], vec![attr::ints("axes", &[0, 1])]);
    let s = m.op("Sub", &[&x, &mx]);
    let e = m.op("Exp", &[&s]);
    let axes = m.ints(&[-1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[3, 4]);
    let before = m.graph();
    let mut g = before.clone();
    assert!(rewrite(&RecognizeSoftmax, &mut g));
    assert_eq!(ops(&g), ["softmax"]);
    assert_same(&before, &g, -5.0, 5.0);
}

/// The maximum over the first axis, the sum over the last: a softmax of `x - max`, where the max
/// subtraction stays (it differs along the rows).
#[test]
fn softmax_other_max_axes() {
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[3, 4]);
    let mx = m.op_attrs("ReduceMax", &[&x], vec![attr::ints("axes", &[0])]);
    let s = m.op("Sub", &[&x, &mx]);
    let e = m.op("Exp", &[&s]);
    let axes = m.ints(&[-1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[3, 4]);
    check(
        &RecognizeSoftmax,
        &m,
        "softmax_other_max_axes",
        &["reduce_max", "sub", "softmax"],
        -5.0,
        5.0,
    );
}

#[test]
fn softmax_not_matched() {
    // exp(x) is also an output.
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[2, 3]);
    let e = m.op("Exp", &[&x]);
    let axes = m.ints(&[-1]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[2, 3]);
    m.output(&e, &[2, 3]);
    check_unchanged(&RecognizeSoftmax, &m);

    // Summed over axes 0 and 2 of a rank-3 tensor: neither one axis nor the trailing ones.
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[2, 3, 4]);
    let e = m.op("Exp", &[&x]);
    let axes = m.ints(&[0, 2]);
    let sum = m.op("ReduceSum", &[&e, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[2, 3, 4]);
    check_unchanged(&RecognizeSoftmax, &m);

    // Divided by the sum of something else.
    let mut m = Model::new("sm", 13);
    let x = m.input("x", &[2, 3]);
    let z = m.input("z", &[2, 3]);
    let e = m.op("Exp", &[&x]);
    let axes = m.ints(&[-1]);
    let sum = m.op("ReduceSum", &[&z, &axes]);
    let y = m.op("Div", &[&e, &sum]);
    m.output(&y, &[2, 3]);
    check_unchanged(&RecognizeSoftmax, &m);
}

/// All three passes leave a graph without their patterns alone, and a second run finds nothing.
#[test]
fn second_run_is_a_no_op() {
    let mut g = torch_layer_norm(13).graph();
    assert!(rewrite(&RecognizeLayerNorm, &mut g));
    for p in [
        &RecognizeLayerNorm as &dyn Pass,
        &RecognizeGelu,
        &RecognizeSoftmax,
    ] {
        assert!(
            !p.run(&mut g, &mut Fuel::unlimited()).unwrap(),
            "{}",
            p.name()
        );
    }
}

/// `--fuel 0` stops the rewrite.
#[test]
fn fuel_is_respected() {
    let mut g = torch_layer_norm(13).graph();
    let before = text(&g);
    assert!(!RecognizeLayerNorm
        .run(&mut g, &mut Fuel::limited(0))
        .unwrap());
    assert_eq!(before, text(&g));
}
