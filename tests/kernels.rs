//! The fused CPU kernels against the composed dfdx code they replace: the same outputs
//! and the same gradients (weights, biases and input), for both activations, with and
//! without a tape; Adam's fused step bit for bit; the vectorised `exp` against `f32::exp`;
//! and every public kernel's refusal of shapes it cannot compute with.

use denoise_gym::kernels::{adam_step, host_view, mlp_forward_constant_suffix, row_blocks};
use denoise_gym::nn::{Activation, Mlp, Parameterized};
use denoise_gym::optim::{global_norm, gradients_of};
use denoise_gym::tensor::{matrix, Matrix};
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};

fn random_matrix(dev: &Cpu, rng: &mut impl Rng, rows: usize, cols: usize) -> Matrix<Cpu> {
    let data = (0..rows * cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
    matrix(dev, data, rows, cols)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Output and every gradient of `loss = Σ w ⊙ mlp(x)` by the fused and composed paths.
fn compare(activation: Activation, rows: usize, widths: (usize, usize, usize, usize)) {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (inputs, hidden, depth, outputs) = widths;
    let mlp = Mlp::new(&dev, inputs, hidden, depth, outputs, activation, &mut rng);
    let x = random_matrix(&dev, &mut rng, rows, inputs);
    let weights = random_matrix(&dev, &mut rng, rows, outputs);

    let fused_plain = mlp.forward(x.clone()).as_vec();
    let composed_plain = mlp.forward_composed(x.clone()).as_vec();
    let scale = composed_plain.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert!(
        max_abs_diff(&fused_plain, &composed_plain) <= 2e-5 * scale,
        "{activation:?}: forward differs by {}",
        max_abs_diff(&fused_plain, &composed_plain)
    );

    let run = |fused: bool| {
        let traced = x.clone().traced(Gradients::leaky());
        let out = if fused {
            mlp.forward(traced)
        } else {
            mlp.forward_composed(traced)
        };
        let loss = (out * weights.clone()).sum();
        let mut grads = loss.backward();
        let mut params = gradients_of(&mut grads, &mlp.parameters()).expect("gradients");
        params.push(grads.get(&x));
        params.into_iter().map(|g| g.as_vec()).collect::<Vec<_>>()
    };
    let fused = run(true);
    let composed = run(false);
    let names: Vec<String> = mlp
        .parameter_names()
        .into_iter()
        .chain(["input".to_string()])
        .collect();
    for ((f, c), name) in fused.iter().zip(&composed).zip(&names) {
        let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(f, c);
        assert!(
            diff <= 1e-4 * scale,
            "{activation:?}: gradient of {name} differs by {diff} (scale {scale})"
        );
        assert!(
            c.iter().any(|v| *v != 0.0),
            "{name}: a zero gradient compares nothing"
        );
    }
}

#[test]
fn fused_silu_mlp_matches_composed_forward_and_gradients() {
    compare(Activation::Silu, 37, (18, 32, 3, 2));
}

#[test]
fn fused_relu_mlp_matches_composed_forward_and_gradients() {
    compare(Activation::Relu, 29, (2, 24, 2, 1));
}

#[test]
fn fused_mlp_cut_into_row_blocks_matches_the_composed_pass() {
    // 600 rows × 19k weights: 4 row blocks; 2,000 rows: 8 (the partial gradients of
    // every block are added).
    let weights = 20 * 128 + 128 * 128 + 128 * 3;
    assert_eq!(row_blocks(600, 600 * weights).len(), 4);
    compare(Activation::Silu, 600, (20, 128, 2, 3));
    assert_eq!(row_blocks(2000, 2000 * weights).len(), 8);
    compare(Activation::Relu, 2000, (20, 128, 2, 3));
}

#[test]
fn row_blocks_cover_the_rows_in_order_and_depend_on_the_shape_alone() {
    let weights = 33_000;
    // (rows, blocks): a small pass is one block; 2 up to 511 rows; then 128-255 rows a
    // block, at most 16.
    for (rows, blocks) in [
        (1, 1),
        (10, 1),
        (64, 2),
        (256, 2),
        (511, 2),
        (512, 4),
        (1023, 4),
        (1024, 8),
        (2048, 16),
        (100_000, 16),
    ] {
        let cut = row_blocks(rows, rows * weights);
        assert_eq!(cut.len(), blocks, "{rows} rows");
        assert_eq!(cut[0].start, 0);
        assert_eq!(cut.last().unwrap().end, rows);
        for pair in cut.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{rows} rows: contiguous");
        }
        let sizes: Vec<usize> = cut.iter().map(|r| r.len()).collect();
        let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            most - least <= 1,
            "{rows} rows: near-equal blocks {sizes:?}"
        );
    }
    // Little work per row: blocks keep at least 2^18 multiply-adds each.
    assert_eq!(row_blocks(4096, 4096 * 100).len(), 1);
    assert_eq!(row_blocks(4096, 4096 * 200).len(), 2);
    assert_eq!(row_blocks(4096, 4096 * 300).len(), 4);
    // The old two-way cut put the first rows / 2 rows in the first block.
    assert_eq!(row_blocks(201, 201 * weights), vec![0..100, 100..201]);
}

#[test]
fn fused_adam_step_equals_the_composed_step_bit_for_bit() {
    // 5 × 7, and 300 × 300: large enough to be updated in pieces on the pool's threads.
    check_adam_step(5, 7);
    check_adam_step(300, 300);
}

fn check_adam_step(rows: usize, cols: usize) {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let param = random_matrix(&dev, &mut rng, rows, cols);
    let grad = random_matrix(&dev, &mut rng, rows, cols);
    let m0 = random_matrix(&dev, &mut rng, rows, cols);
    let v0 = random_matrix(&dev, &mut rng, rows, cols).square();
    let (betas, lr_t, eps_t) = ([0.9, 0.999], 1e-3f32, 1e-8f32);

    let (mut p_fused, mut m_fused, mut v_fused) = (param.clone(), m0.clone(), v0.clone());
    assert!(adam_step(
        &mut p_fused,
        &grad,
        (&mut m_fused, &mut v_fused),
        betas,
        lr_t,
        eps_t
    ));

    let (mut p, mut m, mut v) = (param.clone(), m0.clone(), v0.clone());
    m.axpy(betas[0], &grad, 1.0 - betas[0]);
    v.axpy(betas[1], &grad.clone().square(), 1.0 - betas[1]);
    let direction = m.clone() / (v.clone().sqrt() + eps_t);
    p.axpy(1.0, &direction, -lr_t);

    assert_eq!(p_fused.as_vec(), p.as_vec());
    assert_eq!(m_fused.as_vec(), m.as_vec());
    assert_eq!(v_fused.as_vec(), v.as_vec());
    // The originals are untouched: in-place updates copy shared storage first.
    assert_ne!(param.as_vec(), p.as_vec());
}

#[test]
fn host_view_refuses_broadcast_storage_and_global_norm_matches_the_definition() {
    let dev = Cpu::default();
    let row: Tensor<(usize,), f32, Cpu> = dev.tensor_from_vec(vec![1.0, 2.0, 3.0], (3,));
    let broadcast: Matrix<Cpu> = row.broadcast_like::<_, Axis<0>>(&(4, 3));
    assert!(host_view(&broadcast).is_none());
    let dense = matrix(&dev, vec![3.0, 4.0, 0.0, 12.0], 2, 2);
    assert_eq!(host_view(&dense), Some(&[3.0, 4.0, 0.0, 12.0][..]));
    assert!((global_norm(&[dense]) - 13.0).abs() < 1e-12);
    // Long enough for several 1024-element blocks, the 16 lanes and a tail of 5.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let long = random_matrix(&dev, &mut rng, 3, 1701);
    let exact: f64 = long.as_vec().iter().map(|&v| (v as f64) * (v as f64)).sum();
    let norm = global_norm(&[long]);
    assert!(
        (norm - exact.sqrt()).abs() <= 1e-6 * exact.sqrt(),
        "{norm} vs {}",
        exact.sqrt()
    );
}

#[test]
fn silu_of_extreme_inputs_is_finite_and_nan_stays_nan() {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    // One layer with identity weights: the output is silu(x) of the hidden layer fed
    // through a second identity layer, so silu can be read off exactly.
    let mut mlp = Mlp::new(&dev, 1, 1, 1, 1, Activation::Silu, &mut rng);
    for layer in &mut mlp.layers {
        layer.weight = matrix(&dev, vec![1.0], 1, 1);
        layer.bias = matrix(&dev, vec![0.0], 1, 1);
    }
    let inputs = [
        -1000.0f32, -90.0, -20.0, -1.0, 0.0, 0.5, 3.0, 20.0, 90.0, 1000.0,
    ];
    let x = matrix(&dev, inputs.to_vec(), inputs.len(), 1);
    let out = mlp.forward(x).as_vec();
    for (&v, &y) in inputs.iter().zip(&out) {
        let exact = v / (1.0 + (-v).exp());
        assert!(y.is_finite(), "silu({v}) = {y}");
        assert!(
            (y - exact).abs() <= 1e-6 * exact.abs().max(1.0),
            "silu({v}) = {y}, exact {exact}"
        );
    }
    let nan = mlp.forward(matrix(&dev, vec![f32::NAN], 1, 1)).as_vec();
    assert!(nan[0].is_nan());
}

#[test]
fn constant_suffix_forward_equals_the_forward_on_the_concatenated_input() {
    // The sampler's path (one time embedding for the whole batch, folded into the first
    // layer's bias) against the ordinary forward of `[x_r, suffix]`; 700 rows of a 128-wide
    // network also take the two-block split.
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (rows, hidden, activation) in [(5, 16, Activation::Silu), (700, 128, Activation::Relu)] {
        let mlp = Mlp::new(&dev, 2 + 6, hidden, 3, 2, activation, &mut rng);
        let x = random_matrix(&dev, &mut rng, rows, 2);
        let suffix: Vec<f32> = (0..6).map(|k| (k as f32 * 0.7).sin()).collect();
        let repeated: Vec<f32> = (0..rows).flat_map(|_| suffix.clone()).collect();
        let input = (x.clone(), matrix(&dev, repeated, rows, 6)).concat_along(Axis::<1>);
        let expected = mlp.forward(input).as_vec();
        let got = mlp_forward_constant_suffix(&mlp, &x, &suffix).as_vec();
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&got, &expected) <= 1e-5 * scale,
            "{rows} rows: {}",
            max_abs_diff(&got, &expected)
        );
    }
}

/// `Mlp::forward_frozen`: the same output and, bit for bit, the same input gradient as
/// `Mlp::forward` (both the single block and the two-block split), and every weight and
/// bias gradient left at zero.
#[test]
fn frozen_forward_gives_the_input_gradient_and_no_weight_gradients() {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for (rows, activation) in [(23, Activation::Silu), (600, Activation::Relu)] {
        let mlp = Mlp::new(&dev, 20, 128, 2, 3, activation, &mut rng);
        let x = random_matrix(&dev, &mut rng, rows, 20);
        let weights = random_matrix(&dev, &mut rng, rows, 3);
        let run = |frozen: bool| {
            let traced = x.clone().traced(Gradients::leaky());
            let out = if frozen {
                mlp.forward_frozen(traced)
            } else {
                mlp.forward(traced)
            };
            let value = out.as_vec();
            let mut grads = (out * weights.clone()).sum().backward();
            let input = grads.get(&x).as_vec();
            // A gradient the pass did not write reads as zeros.
            let weight_grads: Vec<bool> = gradients_of(&mut grads, &mlp.parameters())
                .expect("gradients")
                .iter()
                .map(|g| g.as_vec().iter().any(|v| *v != 0.0))
                .collect();
            (value, input, weight_grads)
        };
        let (value, input, weight_grads) = run(false);
        let (value_frozen, input_frozen, weight_grads_frozen) = run(true);
        assert_eq!(value, value_frozen, "{activation:?}, {rows} rows: outputs");
        assert_eq!(
            input, input_frozen,
            "{activation:?}, {rows} rows: input gradient"
        );
        assert!(input.iter().any(|g| *g != 0.0));
        assert!(weight_grads.iter().all(|&kept| kept));
        assert!(
            weight_grads_frozen.iter().all(|&kept| !kept),
            "{activation:?}, {rows} rows: a frozen pass wrote weight gradients"
        );
    }
}

/// Units deep in SiLU's negative tail (below -87.3, where the fused kernels' `exp` clamps)
/// had a sigmoid near 1e-38 and so subnormal outputs and gradients, and a gemm reading
/// them ran 5× slower. The fused kernels now give those units a sigmoid of 0 (as the
/// composed ops' exact sigmoid nearly does) and flush subnormal gradients to zero:
/// the first layer's weight and bias gradients (sums of its units' gradients) hold no
/// subnormal value, and every gradient still agrees with the composed ops.
#[test]
fn silu_tail_gives_no_subnormal_gradients() {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let rows = 4;
    let mlp = Mlp::new(&dev, 20, 128, 1, 3, Activation::Silu, &mut rng);
    // Inputs near 300 put about half the units far below -87 on every row; tiny output
    // weights made every gradient there subnormal.
    let x = matrix(
        &dev,
        (0..rows * 20).map(|i| 300.0 + (i % 7) as f32).collect(),
        rows,
        20,
    );
    let weights = random_matrix(&dev, &mut rng, rows, 3) * 1e-6;
    let tail = mlp.layers[0]
        .forward(x.clone())
        .as_vec()
        .iter()
        .filter(|a| **a < -87.3)
        .count();
    assert!(tail > 100, "only {tail} pre-activations in SiLU's far tail");
    let gradients = |fused: bool| {
        let traced = x.clone().traced(Gradients::leaky());
        let out = if fused {
            mlp.forward(traced)
        } else {
            mlp.forward_composed(traced)
        };
        let mut grads = (out * weights.clone()).sum().backward();
        let mut all = gradients_of(&mut grads, &mlp.parameters()).expect("gradients");
        all.push(grads.get(&x));
        all.into_iter().map(|g| g.as_vec()).collect::<Vec<_>>()
    };
    let fused = gradients(true);
    let first_layer: Vec<f32> = fused[0].iter().chain(&fused[1]).copied().collect();
    let subnormal = first_layer.iter().filter(|v| v.is_subnormal()).count();
    assert_eq!(
        subnormal, 0,
        "the first layer's gradients hold subnormal values"
    );
    for (i, (f, c)) in fused.iter().zip(gradients(false)).enumerate() {
        let scale = c.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(f, &c) <= 1e-4 * scale, "gradient {i}");
    }
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("a wrong shape was accepted");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn every_public_kernel_refuses_wrong_shapes_naming_them() {
    let dev = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mlp = Mlp::new(&dev, 4, 8, 2, 2, Activation::Silu, &mut rng);
    let relu = Mlp::new(&dev, 4, 8, 2, 1, Activation::Relu, &mut rng);
    let x_wide = random_matrix(&dev, &mut rng, 5, 5);
    let x = random_matrix(&dev, &mut rng, 5, 4);
    let cases: Vec<(&str, String)> = vec![
        (
            "an input wider than the first layer",
            panic_message(|| {
                mlp.forward(x_wide.clone());
            }),
        ),
        ("a bias of the wrong length", {
            let mut bad = mlp.clone();
            bad.layers[1].bias = random_matrix(&dev, &mut rng, 1, 9);
            let x = x.clone();
            panic_message(move || {
                bad.forward(x.traced(Gradients::leaky()));
            })
        }),
        ("layers that do not chain", {
            let mut bad = mlp.clone();
            bad.layers[1].weight = random_matrix(&dev, &mut rng, 7, 8);
            let x = x.clone();
            panic_message(move || {
                bad.forward(x);
            })
        }),
        (
            "a suffix that does not complete the input",
            panic_message(|| {
                mlp_forward_constant_suffix(&mlp, &x, &[0.5, 0.5]);
            }),
        ),
        (
            "a ReLU value network on a wider input",
            panic_message(|| {
                denoise_gym::kernels::relu_mlp_value_and_input_gradient(
                    &relu,
                    x_wide.clone().traced(Gradients::leaky()),
                    2,
                );
            }),
        ),
        ("Adam moments of another shape", {
            let (mut p, g) = (x.clone(), x.clone());
            let (mut m, mut v) = (x.clone(), random_matrix(&dev, &mut rng, 4, 5));
            panic_message(move || {
                adam_step(&mut p, &g, (&mut m, &mut v), [0.9, 0.999], 1e-3, 1e-8);
            })
        }),
        (
            "a matmul operand shorter than its shape",
            panic_message(|| {
                let mut dst = vec![0.0; 4];
                denoise_gym::kernels::matmul_dense(2, 3, 2, &[0.0; 5], &[0.0; 6], &mut dst);
            }),
        ),
        (
            "a recorded matmul with a negative stride",
            panic_message(|| {
                let call = denoise_gym::kernels::MatmulCall {
                    m: 2,
                    k: 3,
                    n: 2,
                    accumulate: false,
                    a_strides: (-3, 1),
                    b_strides: (2, 1),
                };
                denoise_gym::kernels::bare_matmul_gflops(&[(call, 1)], 0.0);
            }),
        ),
    ];
    let expected = [
        "input is 5 wide",
        "bias is (1, 9)",
        "layer 1: its weight is 7 × 8, but its input is 8 wide",
        "input is 6 wide",
        "input is 5 wide",
        "adam_step",
        "operand too small",
        "operand a has negative strides (-3, 1)",
    ];
    for ((what, message), needle) in cases.iter().zip(expected) {
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
    }
}
