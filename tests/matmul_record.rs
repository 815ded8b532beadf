//! `kernels::record_matmul_calls` and `kernels::bare_matmul_gflops`, the "same shapes"
//! gemm rate of `dgym bench`. One test in its own binary: a recording sees every thread's
//! matmuls, so no other test may run beside it.

use denoise_gym::kernels::{bare_matmul_gflops, multiply_adds, record_matmul_calls};
use denoise_gym::nn::{Activation, Mlp};
use denoise_gym::tensor::matrix;
use dfdx::prelude::*;
use rand::SeedableRng;

#[test]
fn a_recording_holds_each_layer_product_of_a_pass_and_its_multiply_adds() {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (rows, inputs, hidden, outputs) = (10, 3, 32, 2);
    let mlp = Mlp::new(&dev, inputs, hidden, 2, outputs, Activation::Silu, &mut rng);
    let x = matrix(
        &dev,
        (0..rows * inputs).map(|i| i as f32 * 0.01).collect(),
        rows,
        inputs,
    );

    let before = multiply_adds();
    let (_, forward) = record_matmul_calls(|| mlp.forward(x.clone()).as_vec());
    let counted = multiply_adds() - before;
    let recorded: u64 = forward
        .iter()
        .map(|(c, count)| (c.m * c.k * c.n) as u64 * count)
        .sum();
    assert_eq!(recorded, counted, "{forward:?}");
    assert!(forward.iter().all(|(c, _)| c.m == rows), "{forward:?}");
    let first = forward
        .iter()
        .find(|(c, _)| c.k == inputs)
        .expect("the input layer");
    assert_eq!(
        (first.0.n, first.0.a_strides),
        (hidden, (inputs as isize, 1))
    );
    assert!(forward.iter().any(|(c, _)| (c.k, c.n) == (hidden, outputs)));

    // The backward pass adds the weight gradients `xᵀ · g`: `a` read transposed.
    let (_, backward) = record_matmul_calls(|| {
        let loss = mlp.forward(x.clone().traced(Gradients::leaky())).sum();
        loss.backward()
    });
    assert!(
        backward
            .iter()
            .any(|(c, _)| c.a_strides.0 == 1 && c.m == inputs),
        "{backward:?}"
    );

    let rate = bare_matmul_gflops(&backward, 0.01);
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    assert_eq!(bare_matmul_gflops(&[], 0.01), 0.0);
    // Outside a recording nothing is kept.
    let _ = mlp.forward(x.clone()).as_vec();
    assert!(record_matmul_calls(|| ()).1.is_empty());
}
