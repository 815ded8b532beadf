//! The project-owned optimiser, clipping and EMA.

use denoise_gym::optim::{clip_grad_norm, global_norm, Adam, AdamConfig, WeightEma};
use denoise_gym::tensor::matrix;
use dfdx::prelude::*;

#[test]
fn adam_matches_the_textbook_update_over_several_steps() {
    let dev = Cpu::default();
    let mut p = matrix(&dev, vec![1.0, -2.0], 1, 2);
    let config = AdamConfig {
        betas: [0.9, 0.99],
        eps: 1e-8,
    };
    let mut adam = Adam::new(&[&p], vec![0.1], config).unwrap();
    let (mut m, mut v, mut expected) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
    let grads_seq = [[0.5f32, -1.0], [0.2, 0.3], [-0.4, 2.0]];
    for (k, g) in grads_seq.iter().enumerate() {
        let grad = matrix(&dev, g.to_vec(), 1, 2);
        adam.update(vec![&mut p], &[grad]).unwrap();
        let t = (k + 1) as i32;
        for i in 0..2 {
            m[i] = 0.9 * m[i] + 0.1 * g[i] as f64;
            v[i] = 0.99 * v[i] + 0.01 * (g[i] as f64).powi(2);
            let m_hat = m[i] / (1.0 - 0.9f64.powi(t));
            let v_hat = v[i] / (1.0 - 0.99f64.powi(t));
            expected[i] -= 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        }
    }
    let got = p.as_vec();
    for i in 0..2 {
        assert!(
            (got[i] as f64 - expected[i]).abs() < 1e-5,
            "{got:?} vs {expected:?}"
        );
    }
    assert_eq!(adam.step, 3);
}

#[test]
fn parameter_groups_have_their_own_learning_rate() {
    let dev = Cpu::default();
    let mut a = matrix(&dev, vec![0.0], 1, 1);
    let mut b = matrix(&dev, vec![0.0], 1, 1);
    let mut adam = Adam::new(&[&a, &b], vec![0.1, 0.01], AdamConfig::default()).unwrap();
    let g = matrix(&dev, vec![1.0], 1, 1);
    adam.update(vec![&mut a, &mut b], &[g.clone(), g]).unwrap();
    // The first Adam step moves each parameter by its learning rate.
    assert!((a.as_vec()[0] + 0.1).abs() < 1e-6);
    assert!((b.as_vec()[0] + 0.01).abs() < 1e-6);
}

#[test]
fn adam_rejects_mismatched_inputs() {
    let dev = Cpu::default();
    let p = matrix(&dev, vec![0.0], 1, 1);
    assert!(Adam::new(&[&p], vec![], AdamConfig::default()).is_err());
    assert!(Adam::new(&[&p], vec![-1.0], AdamConfig::default()).is_err());
    let mut adam = Adam::new(&[&p], vec![0.1], AdamConfig::default()).unwrap();
    let mut q = p.clone();
    assert!(adam.update(vec![&mut q], &[]).is_err());
}

#[test]
fn clipping_scales_to_the_max_norm_and_reports_the_original() {
    let dev = Cpu::default();
    let mut grads = vec![
        matrix(&dev, vec![3.0, 0.0], 1, 2),
        matrix(&dev, vec![4.0], 1, 1),
    ];
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    assert!((global_norm(&grads) - 1.0).abs() < 1e-4);
    assert!((grads[0].as_vec()[0] - 0.6).abs() < 1e-4);
    let mut small = vec![matrix(&dev, vec![0.3], 1, 1)];
    clip_grad_norm(&mut small, 1.0);
    assert_eq!(small[0].as_vec(), vec![0.3]);
    let mut off = vec![matrix(&dev, vec![30.0], 1, 1)];
    clip_grad_norm(&mut off, 0.0);
    assert_eq!(off[0].as_vec(), vec![30.0]);
}

#[test]
fn weight_ema_follows_its_recursion_and_owns_its_storage() {
    let dev = Cpu::default();
    let mut p = matrix(&dev, vec![0.0], 1, 1);
    let mut ema = WeightEma::new(&[&p], 0.9);
    p = matrix(&dev, vec![1.0], 1, 1);
    for _ in 0..3 {
        ema.update(&[&p]);
    }
    // 1 - 0.9³ of the way from 0 to 1.
    assert!((ema.shadow[0].as_vec()[0] - (1.0 - 0.9f32.powi(3))).abs() < 1e-6);
    let mut target = matrix(&dev, vec![5.0], 1, 1);
    ema.copy_to(vec![&mut target]);
    assert!((target.as_vec()[0] - 0.271).abs() < 1e-5);
}
