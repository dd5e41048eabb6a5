//! `cargo run -p kiln-example-mlp`: runs the compiled MLP on a fixed input and prints the classes.

fn main() {
    let input: [f32; kiln_example_mlp::INPUT_LEN] =
        std::array::from_fn(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5);
    let probs = kiln_example_mlp::Mlp::new()
        .run(&input)
        .expect("mlp_run failed");
    for (class, p) in probs.iter().enumerate() {
        println!("class {class}: {p:.6}");
    }
}
