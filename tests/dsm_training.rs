//! DSM pretraining on 8 Gaussians: the loss falls and samples approach the data.

use denoise_gym::metrics::sliced_wasserstein;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::optim::{gradients_of, Adam, AdamConfig};
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::rng::{normal_matrix, normal_vec, seeded};
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::matrix;
use denoise_gym_envs::{Dataset, GaussianMixture};
use dfdx::prelude::*;
use rand::Rng;

#[test]
fn dsm_lowers_the_loss_and_brings_samples_closer_to_the_data() {
    let dev = Cpu::default();
    let data = GaussianMixture::eight_gaussians();
    let spec = PolicySpec {
        dim: 2,
        hidden: 64,
        depth: 2,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma: true,
        last_sigma: 0.0,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, 10).unwrap();
    let mut rng = seeded(0, 0);
    let mut policy = GaussianPolicy::new(&dev, spec, schedule, &mut rng).unwrap();
    let params = policy.eps_net.parameters();
    let mut adam = Adam::new(&params, vec![2e-3; params.len()], AdamConfig::default()).unwrap();
    let (batch, steps) = (128, 1500);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let x0 = matrix(&dev, data.sample(batch, &mut rng), batch, 2);
        let ts: Vec<usize> = (0..batch).map(|_| rng.gen_range(1..=10)).collect();
        let noise = normal_matrix(&dev, &mut rng, batch, 2);
        let x_t = policy.noised(&x0, &ts, &noise);
        let loss = policy.dsm_loss(x_t.traced(Gradients::leaky()), &ts, &noise);
        losses.push(loss.as_vec()[0]);
        let mut grads = loss.backward();
        let g = gradients_of(&mut grads, &policy.eps_net.parameters()).unwrap();
        adam.update(policy.eps_net.parameters_mut(), &g).unwrap();
    }
    let early: f32 = losses[..100].iter().sum::<f32>() / 100.0;
    let late: f32 = losses[steps - 100..].iter().sum::<f32>() / 100.0;
    assert!(late < 0.7 * early, "DSM loss {early} → {late}");

    let n = 1000;
    let mut eval_rng = seeded(1, 0);
    let samples = policy.sample(n, &mut eval_rng).as_vec();
    let reference = data.sample(n, &mut eval_rng);
    let prior = normal_vec(&mut eval_rng, n * 2);
    let swd_samples = sliced_wasserstein(&samples, &reference, 2, 200, &mut eval_rng);
    let swd_prior = sliced_wasserstein(&prior, &reference, 2, 200, &mut eval_rng);
    assert!(
        swd_samples < 0.5 * swd_prior,
        "SWD samples {swd_samples} vs prior {swd_prior}"
    );
}
