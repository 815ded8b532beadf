//! The KL anchor to the pretrained sampler (`agent.kl_reference`): the closed form against
//! a Monte-Carlo estimate, a zero gradient at the reference, a large weight holding the
//! policy at the reference while the unanchored one moves away, the reference surviving a
//! checkpoint, and the errors on bad weights.

use std::cell::RefCell;
use std::rc::Rc;

use denoise_gym::agent::{gaussian_kl_rows, Agent, KlAnchor, VelocityScaleKind};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::EnergyModel;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::DifferentiableReward;
use denoise_gym::rng::{normal_matrix, seeded, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::matrix;
use denoise_gym_agents::baselines::BatchMean;
use denoise_gym_agents::{Dxdp, DxdpConfig, Ppo, PpoConfig, Reinforce, ReinforceConfig};
use dfdx::prelude::*;

mod common;
use common::{quadratic_rollout, small_policy};

fn policy(n_steps: usize, seed: u64) -> GaussianPolicy<Cpu> {
    small_policy(n_steps, seed, 3.0, false)
}

fn config(kl_reference: f64) -> ReinforceConfig {
    ReinforceConfig {
        lr: 1e-2,
        lr_log_sigma: 1e-2,
        grad_clip: 0.0,
        tau_entropy: 0.0,
        tau_velocity: 0.05,
        velocity_scale: VelocityScaleKind::Fixed,
        kl_reference,
        ..ReinforceConfig::default()
    }
}

/// One batch acted by `agent`, rewarded by `-(x0 - (2, 0))²`: a target the initial
/// sampler misses, so that an unanchored agent moves far from it.
fn rollout(agent: &mut dyn Agent<Cpu>, batch: usize, rng: &mut ProjectRng) -> Rollout<Cpu> {
    quadratic_rollout(agent, batch, rng, [2.0, 0.0])
}

/// `mean_batch Σ_t KL_t` of `policy` to `reference` along `policy`'s own chains.
fn path_kl(policy: &GaussianPolicy<Cpu>, reference: &GaussianPolicy<Cpu>, seed: u64) -> f64 {
    let anchor = KlAnchor::new(reference, 1.0).unwrap().unwrap();
    let mut rng = seeded(seed, 0);
    let n = 512;
    let mut x = normal_matrix(&Cpu::default(), &mut rng, n, 2);
    let mut total = 0.0;
    for t in (1..=policy.n_steps()).rev() {
        let ts = vec![t; n];
        let kl = anchor.kl_rows(
            policy,
            policy.mean(x.clone(), &ts),
            anchor.reference_mean(&x, &ts),
            &ts,
        );
        total += kl.as_vec().iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let noise = normal_matrix(&Cpu::default(), &mut rng, n, 2);
        x = policy.sample_step(&x, t, &noise);
    }
    total
}

#[test]
fn the_closed_form_kl_matches_a_monte_carlo_estimate() {
    let dev = Cpu::default();
    let mut p = policy(3, 1);
    let q = policy(3, 2);
    // σ_t of p away from q's so that both terms of the KL count.
    p.log_sigma = matrix(&dev, vec![-0.9, -0.2, 0.3], 1, 3);
    let x = matrix(&dev, vec![0.4, -1.1, 1.5, 0.2], 2, 2);
    for t in 1..=3 {
        let ts = [t, t];
        let closed = gaussian_kl_rows(
            p.mean(x.clone(), &ts),
            p.log_sigma_at::<NoneTape>(&ts),
            q.mean(x.clone(), &ts),
            q.log_sigma_at::<NoneTape>(&ts),
        )
        .as_vec();
        // E_{a ~ p}[log p(a) - log q(a)] from 200,000 draws per state.
        let draws = 200_000;
        let mut rng = seeded(7, t as u64);
        for (row, &expected) in closed.iter().enumerate() {
            let state = x.as_vec()[row * 2..row * 2 + 2].to_vec();
            let states = matrix(&dev, state.repeat(draws), draws, 2);
            let ts = vec![t; draws];
            let noise = normal_matrix(&dev, &mut rng, draws, 2);
            let actions = p.sample_step(&states, t, &noise);
            let log_p = p.log_prob(states.clone(), &ts, &actions).as_vec();
            let log_q = q.log_prob(states, &ts, &actions).as_vec();
            let diffs: Vec<f64> = log_p
                .iter()
                .zip(&log_q)
                .map(|(a, b)| (a - b) as f64)
                .collect();
            let mean = diffs.iter().sum::<f64>() / draws as f64;
            let var = diffs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / draws as f64;
            let standard_error = (var / draws as f64).sqrt();
            println!(
                "t {t} row {row}: closed form {expected:.5}, MC {mean:.5} ± {standard_error:.5}"
            );
            assert!(expected > 0.0);
            assert!(
                (mean - expected as f64).abs() < 4.0 * standard_error + 1e-4,
                "t {t} row {row}: closed form {expected}, MC {mean} ± {standard_error}"
            );
        }
    }
    // KL of a distribution to itself is 0.
    let ts = [2, 2];
    let zero = gaussian_kl_rows(
        q.mean(x.clone(), &ts),
        q.log_sigma_at::<NoneTape>(&ts),
        q.mean(x, &ts),
        q.log_sigma_at::<NoneTape>(&ts),
    );
    assert!(
        zero.as_vec().iter().all(|v| v.abs() < 1e-6),
        "{:?}",
        zero.as_vec()
    );
}

/// A small DxDP agent, anchored with `weight`, against a fixed random energy.
fn dxdp(start: GaussianPolicy<Cpu>, weight: f64) -> Dxdp<Cpu> {
    let energy = EnergyModel::new(
        &Cpu::default(),
        2,
        16,
        2,
        Activation::Silu,
        &mut seeded(8, 1),
    );
    let reward: Rc<RefCell<dyn DifferentiableReward<Cpu>>> = Rc::new(RefCell::new(energy));
    let own = DxdpConfig {
        value_hidden: 16,
        value_depth: 2,
        grad_clip: 0.0,
        ..DxdpConfig::default()
    };
    Dxdp::new(start, reward, config(weight), own, &mut seeded(5, 2)).unwrap()
}

fn parameters(policy: &GaussianPolicy<Cpu>) -> Vec<Vec<f32>> {
    policy.parameters().iter().map(|m| m.as_vec()).collect()
}

#[test]
fn at_the_reference_the_anchor_adds_nothing_to_the_gradient() {
    // The KL is smallest (0) at the reference, so its gradient there is 0: the first
    // update with any weight equals the update without an anchor.
    let mut updated = Vec::new();
    for weight in [0.0, 1e3] {
        let mut agent = Reinforce::new(policy(3, 5), Box::new(BatchMean), config(weight)).unwrap();
        let mut rng = seeded(11, 0);
        let data = rollout(&mut agent, 64, &mut rng);
        let stats = agent.update(&data, &mut rng, 0).unwrap();
        let kl = stats.iter().find(|(k, _)| k == "policy/kl_reference");
        assert_eq!(kl.is_some(), weight > 0.0, "{stats:?}");
        if let Some((_, kl)) = kl {
            assert!(kl.abs() < 1e-6, "KL at the reference: {kl}");
        }
        updated.push(parameters(&agent.policy));
    }
    for (a, b) in updated[0].iter().zip(&updated[1]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn a_large_weight_holds_the_policy_at_the_reference_for_reinforce_and_ppo() {
    let start = policy(3, 3);
    let mut kls = Vec::new();
    for (agent_name, weight) in [
        ("reinforce", 0.0),
        ("reinforce", 50.0),
        ("ppo", 0.0),
        ("ppo", 50.0),
    ] {
        let mut agent: Box<dyn Agent<Cpu>> = match agent_name {
            "reinforce" => Box::new(
                Reinforce::new(start.clone(), Box::new(BatchMean), config(weight)).unwrap(),
            ),
            _ => Box::new(
                Ppo::new(
                    start.clone(),
                    Box::new(BatchMean),
                    config(weight),
                    PpoConfig {
                        minibatch_size: Some(48),
                        ..PpoConfig::default()
                    },
                )
                .unwrap(),
            ),
        };
        let mut rng = seeded(6, 0);
        let mut last = Vec::new();
        for i in 0..60 {
            let data = rollout(agent.as_mut(), 32, &mut rng);
            last = agent.update(&data, &mut rng, i).unwrap();
        }
        let kl = path_kl(agent.policy(), &start, 21);
        println!("{agent_name}, kl_reference {weight}: path KL to the start {kl:.4}");
        if weight > 0.0 {
            let logged = last
                .iter()
                .find(|(k, _)| k == "policy/kl_reference")
                .map(|(_, v)| *v)
                .unwrap();
            assert!(
                logged >= 0.0 && logged < 10.0 * kl + 0.05,
                "{logged} vs {kl}"
            );
        }
        kls.push(kl);
    }
    for (free, anchored) in [(kls[0], kls[1]), (kls[2], kls[3])] {
        assert!(free > 0.5, "the unanchored agent barely moved: KL {free}");
        assert!(
            anchored < free / 10.0,
            "anchored KL {anchored}, free {free}"
        );
    }
}

#[test]
fn the_reference_survives_a_checkpoint_and_a_missing_one_is_an_error() {
    let start = policy(3, 4);
    let mut agent = Reinforce::new(start.clone(), Box::new(BatchMean), config(5.0)).unwrap();
    let mut rng = seeded(2, 0);
    for i in 0..5 {
        let data = rollout(&mut agent, 16, &mut rng);
        agent.update(&data, &mut rng, i).unwrap();
    }
    let mut checkpoint = Checkpoint::default();
    agent.save(&mut checkpoint, "agent").unwrap();
    // A fresh agent whose own reference is another sampler takes the stored one.
    let mut resumed = Reinforce::new(policy(3, 9), Box::new(BatchMean), config(5.0)).unwrap();
    let path = std::path::Path::new("checkpoint.safetensors");
    resumed.load(&checkpoint, path, "agent").unwrap();
    let reference = &resumed.anchor.as_ref().unwrap().reference;
    assert_eq!(parameters(reference), parameters(&start));
    assert_eq!(parameters(&resumed.policy), parameters(&agent.policy));

    // Written without an anchor, read with one: an error naming the key.
    let mut plain = Checkpoint::default();
    Reinforce::new(start.clone(), Box::new(BatchMean), config(0.0))
        .unwrap()
        .save(&mut plain, "agent")
        .unwrap();
    let mut anchored = Reinforce::new(start, Box::new(BatchMean), config(5.0)).unwrap();
    let err = anchored
        .load(&plain, path, "agent")
        .unwrap_err()
        .to_string();
    assert!(err.contains("kl_reference"), "{err}");
}

#[test]
fn a_weight_below_zero_or_not_finite_is_an_error_naming_the_key() {
    for weight in [-1.0, f64::NAN, f64::INFINITY] {
        let err = Reinforce::new(policy(2, 1), Box::new(BatchMean), config(weight))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("kl_reference"), "{weight}: {err}");
    }
}

#[test]
fn a_large_weight_holds_dxdp_at_the_reference() {
    let start = policy(3, 3);
    let mut kls = Vec::new();
    for weight in [0.0, 50.0] {
        let mut agent = dxdp(start.clone(), weight);
        let mut rng = seeded(6, 0);
        let mut last = Vec::new();
        for i in 0..60 {
            let data = rollout(&mut agent, 32, &mut rng);
            last = agent.update(&data, &mut rng, i).unwrap();
        }
        let kl = path_kl(&agent.policy, &start, 21);
        println!("dxdp, kl_reference {weight}: path KL to the start {kl:.4}");
        assert_eq!(
            last.iter().any(|(k, _)| k == "policy/kl_reference"),
            weight > 0.0
        );
        kls.push(kl);
    }
    assert!(
        kls[0] > 0.5,
        "the unanchored agent barely moved: KL {}",
        kls[0]
    );
    assert!(
        kls[1] < kls[0] / 10.0,
        "anchored KL {}, free {}",
        kls[1],
        kls[0]
    );
}

#[test]
fn away_from_the_reference_every_agent_logs_the_same_kl_and_ppo_has_reinforce_gradient_over_k() {
    let (start, moved) = (policy(3, 3), policy(3, 7));
    let weight = 2.0;
    let mut reinforce = Reinforce::new(start.clone(), Box::new(BatchMean), config(weight)).unwrap();
    let mut ppo = Ppo::new(
        start.clone(),
        Box::new(BatchMean),
        config(weight),
        PpoConfig {
            epochs: 1,
            minibatch_size: None,
            ..PpoConfig::default()
        },
    )
    .unwrap();
    let mut dxdp = dxdp(start, weight);
    // Every agent's policy moves away from its reference, the same way.
    reinforce.policy = moved.clone();
    ppo.reinforce.policy = moved.clone();
    dxdp.policy = moved;
    let data = rollout(&mut ppo, 64, &mut seeded(12, 0));

    let batch = reinforce.score(&data).unwrap();
    let (loss, kl) = reinforce.loss_and_kl(&batch);
    let kl = kl.unwrap();
    let expected: Vec<Vec<f32>> = reinforce
        .gradients(loss)
        .unwrap()
        .iter()
        .map(|g| g.as_vec())
        .collect();

    let batch = ppo.reinforce.score(&data).unwrap();
    let old: Vec<f32> = data.log_probs.iter().flat_map(|v| v.as_vec()).collect();
    let all: Vec<usize> = (0..batch.len()).collect();
    let (loss, stats) = ppo.minibatch_loss(&batch, &all, &old);
    let ppo_kl = stats.kl_reference.unwrap();
    let k = 3.0;
    for (g, e) in ppo.reinforce.gradients(loss).unwrap().iter().zip(&expected) {
        for (a, b) in g.as_vec().iter().zip(e) {
            assert!(
                (a * k - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "PPO × K {} against REINFORCE {b}",
                a * k
            );
        }
    }

    let (states, _, steps) = data.stacked_transitions();
    let noise = denoise_gym::rng::normal_matrix(&Cpu::default(), &mut seeded(3, 3), steps.len(), 2);
    let (_, _, kl_per_row) = dxdp.policy_loss(&states, &steps, &noise).unwrap();
    let dxdp_kl = kl_per_row * 3.0;
    println!("KL per chain: REINFORCE {kl}, PPO {ppo_kl}, DxDP {dxdp_kl}");
    assert!(kl > 0.1, "the moved policy is near its reference: {kl}");
    for other in [ppo_kl, dxdp_kl] {
        assert!((other - kl).abs() < 1e-4 * kl, "{other} against {kl}");
    }
}
