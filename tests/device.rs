//! The same computations on the device under test and on the CPU reference (dfdx's
//! composed ops): with the `cuda` feature on the GPU, without it the CPU's fused kernels,
//! so every CI run exercises the comparison that `scripts/gpu_check.sh` runs on a GPU
//! (`cargo test --features cuda --test device` built beforehand).

use denoise_gym::nn::{Activation, Mlp, Parameterized};
use denoise_gym::optim::{gradients_of, Adam, AdamConfig};
use denoise_gym::tensor::{matrix, Backend, Matrix};
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};

/// The device under test.
#[cfg(feature = "cuda")]
type TestDevice = Cuda;
/// The device under test.
#[cfg(not(feature = "cuda"))]
type TestDevice = Cpu;

fn random_data(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// The output of `loss = Σ w ⊙ mlp(x)` and its gradients (every parameter, then the
/// input), on device `D`, through `mlp.forward` (the device's own path) or the composed
/// ops.
fn forward_and_gradients<D: Backend>(
    dev: &D,
    activation: Activation,
    rows: usize,
    composed: bool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (inputs, hidden, depth, outputs) = (18, 64, 3, 2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mlp = Mlp::new(dev, inputs, hidden, depth, outputs, activation, &mut rng);
    let x: Matrix<D> = matrix(dev, random_data(4, rows * inputs), rows, inputs);
    let weights: Matrix<D> = matrix(dev, random_data(5, rows * outputs), rows, outputs);
    let traced = x.clone().traced(Gradients::leaky());
    let out = if composed {
        mlp.forward_composed(traced)
    } else {
        mlp.forward(traced)
    };
    let value = out.as_vec();
    let mut grads = (out * weights).sum().backward();
    let mut all = gradients_of(&mut grads, &mlp.parameters()).expect("gradients");
    all.push(grads.get(&x));
    (value, all.into_iter().map(|g| g.as_vec()).collect())
}

fn assert_close(what: &str, device: &[f32], reference: &[f32], tolerance: f32) {
    assert_eq!(device.len(), reference.len(), "{what}: length");
    let scale = reference.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let diff = device
        .iter()
        .zip(reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= tolerance * scale,
        "{what}: the device differs from the CPU by {diff} (scale {scale})"
    );
    assert!(device.iter().all(|v| v.is_finite()), "{what}: not finite");
}

#[test]
fn the_device_mlp_matches_the_cpu_forward_and_gradients() {
    let dev = TestDevice::default();
    // 1,000 rows: several row blocks on the CPU.
    for (activation, rows) in [(Activation::Silu, 37), (Activation::Relu, 1000)] {
        let (value, grads) = forward_and_gradients(&dev, activation, rows, false);
        let (ref_value, ref_grads) = forward_and_gradients(&Cpu::default(), activation, rows, true);
        assert_close(&format!("{activation:?} output"), &value, &ref_value, 2e-5);
        for (i, (g, r)) in grads.iter().zip(&ref_grads).enumerate() {
            assert!(
                r.iter().any(|v| *v != 0.0),
                "gradient {i}: zero compares nothing"
            );
            assert_close(&format!("{activation:?} gradient {i}"), g, r, 1e-4);
        }
    }
}

#[test]
fn the_device_adam_step_matches_the_textbook_update() {
    let (n, lr, [beta1, beta2], eps) = (300 * 300, 1e-2, [0.9, 0.999], 1e-8);
    let start = random_data(6, n);
    let gradient = random_data(7, n);
    let dev = TestDevice::default();
    let mut param: Matrix<TestDevice> = matrix(&dev, start.clone(), 300, 300);
    let grad: Matrix<TestDevice> = matrix(&dev, gradient.clone(), 300, 300);
    let config = AdamConfig {
        betas: [beta1, beta2],
        eps,
    };
    let mut adam = Adam::new(&[&param], vec![lr], config).unwrap();
    for _ in 0..3 {
        adam.update(vec![&mut param], std::slice::from_ref(&grad))
            .unwrap();
    }
    // m̂ = m / (1 - β1^t), v̂ = v / (1 - β2^t), θ ← θ - lr m̂ / (√v̂ + ε), in f64.
    let expected: Vec<f32> = start
        .iter()
        .zip(&gradient)
        .map(|(&p, &g)| {
            let (mut p, g) = (p as f64, g as f64);
            let (mut m, mut v) = (0.0, 0.0);
            for t in 1..=3 {
                m = beta1 * m + (1.0 - beta1) * g;
                v = beta2 * v + (1.0 - beta2) * g * g;
                let m_hat = m / (1.0 - beta1.powi(t));
                let v_hat = v / (1.0 - beta2.powi(t));
                p -= lr * m_hat / (v_hat.sqrt() + eps);
            }
            p as f32
        })
        .collect();
    // Each step moves a parameter by about lr (|m̂| ≈ √v̂): three steps, 0.03.
    let moved = param.as_vec();
    assert_close("Adam", &moved, &expected, 1e-5);
    let far = moved
        .iter()
        .zip(&start)
        .filter(|(a, b)| (*a - *b).abs() > 0.02)
        .count();
    assert!(
        far > n / 2,
        "three steps of lr 1e-2 move most parameters by ~0.03"
    );
}
