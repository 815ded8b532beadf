//! The plug-in contract: an agent, a reward and an environment written outside the
//! library train through the public `irl_iteration`; and the library's own REINFORCE
//! improves a sampler against an exact (oracle) reward.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use denoise_gym::agent::{Action, Agent, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::env::{DenoisingState, Env, Step};
use denoise_gym::error::{Error, Result};
use denoise_gym::irl::irl_iteration;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::reward::{shared, LearnedReward, RewardModel, SharedReward};
use denoise_gym::rng::{normal_matrix, seeded, ProjectRng};
use denoise_gym::rollout::{collect_rollout, Rollout};
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, vector, Matrix, Vector};
use denoise_gym_agents::baselines::LeaveOneOut;
use denoise_gym_agents::{Reinforce, ReinforceConfig};
use denoise_gym_envs::{Dataset, DenoisingEnv, GaussianMixture, OracleReward};
use dfdx::prelude::*;
use rand::Rng;

const DIM: usize = 2;

/// A fresh policy briefly pretrained by DSM on `N(0, I)` data, so that its samples start
/// as a unit blob around the origin (an untrained ε-network amplifies `x_T` a hundredfold
/// through `1/√ᾱ_T`).
fn blob_policy(n_steps: usize, seed: u64) -> GaussianPolicy<Cpu> {
    let dev = Cpu::default();
    let spec = PolicySpec {
        dim: DIM,
        hidden: 32,
        depth: 2,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma: true,
        last_sigma: 0.0,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, n_steps).unwrap();
    let mut rng = seeded(seed, 0);
    let mut policy = GaussianPolicy::new(&dev, spec, schedule, &mut rng).unwrap();
    let params = policy.eps_net.parameters();
    let mut adam = Adam::new(&params, vec![3e-3; params.len()], AdamConfig::default()).unwrap();
    let batch = 128;
    for _ in 0..300 {
        let x0 = normal_matrix(&dev, &mut rng, batch, DIM);
        let ts: Vec<usize> = (0..batch).map(|_| rng.gen_range(1..=n_steps)).collect();
        let noise = normal_matrix(&dev, &mut rng, batch, DIM);
        let x_t = policy.noised(&x0, &ts, &noise);
        let loss = policy.dsm_loss(x_t.traced(Gradients::leaky()), &ts, &noise);
        let mut grads = loss.backward();
        let g = gradients_of(&mut grads, &policy.eps_net.parameters()).unwrap();
        adam.update(policy.eps_net.parameters_mut(), &g).unwrap();
    }
    policy
}

fn mean_squared_distance(points: &[f32], centre: [f32; 2]) -> f64 {
    let n = points.len() / DIM;
    points
        .chunks(DIM)
        .map(|p| ((p[0] - centre[0]).powi(2) + (p[1] - centre[1]).powi(2)) as f64)
        .sum::<f64>()
        / n as f64
}

// ---------------------------------------------------------------------------------------
// A user's own reward: r(x0) = -‖x0 - c‖², whose centre c learns the data mean.
// ---------------------------------------------------------------------------------------

struct CentreReward {
    centre: [f32; 2],
    rate: f32,
    learn_calls: usize,
    negatives_seen: usize,
}

impl RewardModel<Cpu> for CentreReward {
    fn reward(&self, x0: &Matrix<Cpu>) -> Result<Vector<Cpu>> {
        let c = self.centre;
        let r = x0
            .as_vec()
            .chunks(DIM)
            .map(|p| -((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)))
            .collect();
        Ok(vector(x0.device(), r))
    }
    fn dim(&self) -> usize {
        DIM
    }
    fn name(&self) -> &str {
        "centre"
    }
}

impl LearnedReward<Cpu> for CentreReward {
    fn learn(
        &mut self,
        positive: &Matrix<Cpu>,
        negative: &Matrix<Cpu>,
        _iteration: u64,
    ) -> Result<Stats> {
        if positive.shape().1 != DIM || negative.shape() != positive.shape() {
            return Err(Error::InvalidArgument(format!(
                "positive {:?} vs negative {:?}",
                positive.shape(),
                negative.shape()
            )));
        }
        let p = positive.as_vec();
        let n = p.len() / DIM;
        for j in 0..DIM {
            let mean = p.iter().skip(j).step_by(DIM).sum::<f32>() / n as f32;
            self.centre[j] += self.rate * (mean - self.centre[j]);
        }
        self.learn_calls += 1;
        self.negatives_seen += negative.shape().0;
        let gap = self.reward(positive)?.as_vec().iter().sum::<f32>() / n as f32
            - self.reward(negative)?.as_vec().iter().sum::<f32>() / n as f32;
        Ok(vec![("centre/gap".to_string(), gap as f64)])
    }
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        checkpoint.metadata.insert(
            format!("{prefix}.centre"),
            format!("{} {}", self.centre[0], self.centre[1]),
        );
        Ok(())
    }
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        let raw = checkpoint.meta(path, &format!("{prefix}.centre"))?;
        let v: Vec<f32> = raw.split(' ').filter_map(|s| s.parse().ok()).collect();
        self.centre = [v[0], v[1]];
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// A user's own environment: T steps from N(0, I), scored at the end by the shared reward.
// ---------------------------------------------------------------------------------------

struct BlobEnv {
    n_steps: usize,
    batch: usize,
    reward: SharedReward<Cpu>,
    rng: ProjectRng,
    t: Option<usize>,
    resets: usize,
}

impl Env<Cpu> for BlobEnv {
    type Observation = DenoisingState<Cpu>;
    type Action = Matrix<Cpu>;

    fn reset(&mut self, seed: Option<u64>) -> Result<DenoisingState<Cpu>> {
        if let Some(seed) = seed {
            self.rng = seeded(seed, 9);
        }
        self.t = Some(self.n_steps);
        self.resets += 1;
        Ok(DenoisingState {
            x: normal_matrix(&Cpu::default(), &mut self.rng, self.batch, DIM),
            t: self.n_steps,
        })
    }

    fn step(&mut self, action: Matrix<Cpu>) -> Result<Step<DenoisingState<Cpu>, Cpu>> {
        let t = match self.t {
            Some(t) if t > 0 => t,
            _ => return Err(Error::InvalidArgument("reset first".into())),
        };
        if *action.shape() != (self.batch, DIM) {
            return Err(Error::InvalidArgument("bad action shape".into()));
        }
        let next = t - 1;
        self.t = Some(next);
        let reward = if next == 0 {
            self.reward.borrow().reward(&action)?
        } else {
            vector(&Cpu::default(), vec![0.0; self.batch])
        };
        Ok(Step {
            observation: DenoisingState { x: action, t: next },
            reward,
            terminated: next == 0,
            truncated: false,
            info: BTreeMap::new(),
        })
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn horizon(&self) -> Option<usize> {
        Some(self.n_steps)
    }
}

// ---------------------------------------------------------------------------------------
// A user's own agent: REINFORCE on the ε-network with the batch-mean reward as a fixed
// baseline, recording log π_old while acting.
// ---------------------------------------------------------------------------------------

struct PlainReinforce {
    policy: GaussianPolicy<Cpu>,
    optimizer: Adam<Cpu>,
    updates: usize,
}

impl PlainReinforce {
    fn new(policy: GaussianPolicy<Cpu>, lr: f64) -> Self {
        let params = policy.eps_net.parameters();
        let optimizer = Adam::new(&params, vec![lr; params.len()], AdamConfig::default()).unwrap();
        Self {
            policy,
            optimizer,
            updates: 0,
        }
    }
}

impl Agent<Cpu> for PlainReinforce {
    fn name(&self) -> &str {
        "plain-reinforce"
    }

    fn policy(&self) -> &GaussianPolicy<Cpu> {
        &self.policy
    }

    fn act(
        &mut self,
        observation: &DenoisingState<Cpu>,
        rng: &mut ProjectRng,
    ) -> Result<Action<Cpu>> {
        let (rows, cols) = *observation.x.shape();
        let noise = normal_matrix(&Cpu::default(), rng, rows, cols);
        let next = self
            .policy
            .sample_step(&observation.x, observation.t, &noise);
        let ts = vec![observation.t; rows];
        let log_prob = self.policy.log_prob(observation.x.clone(), &ts, &next);
        Ok(Action {
            next,
            log_prob: Some(log_prob),
        })
    }

    fn update(&mut self, rollout: &Rollout<Cpu>, _rng: &mut ProjectRng, _it: u64) -> Result<Stats> {
        let (n_steps, batch) = (rollout.n_steps(), rollout.batch_size());
        if rollout.log_probs.len() != n_steps {
            return Err(Error::InvalidArgument(format!(
                "{} recorded log-probabilities for {n_steps} steps",
                rollout.log_probs.len()
            )));
        }
        let (states, actions, steps) = rollout.stacked_transitions();
        let log_prob = self
            .policy
            .log_prob(states.traced(Gradients::leaky()), &steps, &actions);
        // The policy has not changed since acting: re-scoring gives log π_old back, in
        // the same (step-major) order.
        let recorded: Vec<f32> = rollout.log_probs.iter().flat_map(|v| v.as_vec()).collect();
        for (a, b) in log_prob.as_vec().iter().zip(&recorded) {
            if (a - b).abs() > 1e-3 * (1.0 + b.abs()) {
                return Err(Error::InvalidArgument(format!("log π {a} vs recorded {b}")));
            }
        }
        let reward = rollout.terminal_reward.as_vec();
        let mean = reward.iter().sum::<f32>() / batch as f32;
        let std = (reward.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / batch as f32).sqrt();
        let advantages: Vec<f32> = (0..n_steps * batch)
            .map(|k| (reward[k % batch] - mean) / (std + 1e-6))
            .collect();
        let objective = (log_prob * vector(&Cpu::default(), advantages)).sum() / batch as f32;
        let mut grads = (-objective).backward();
        let mut g = gradients_of(&mut grads, &self.policy.eps_net.parameters())?;
        clip_grad_norm(&mut g, 1.0);
        self.optimizer
            .update(self.policy.eps_net.parameters_mut(), &g)?;
        self.updates += 1;
        Ok(vec![("plain/reward_mean".to_string(), mean as f64)])
    }

    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        checkpoint.put_model(&format!("{prefix}.policy"), &self.policy);
        self.optimizer.save(
            checkpoint,
            &format!("{prefix}.optim"),
            &self.policy.eps_net.parameter_names(),
        );
        Ok(())
    }

    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        checkpoint.load_model(path, &format!("{prefix}.policy"), &mut self.policy)?;
        let names = self.policy.eps_net.parameter_names();
        self.optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)
    }
}

/// Data at (1.5, -1): the reward's centre learns it from the positives, and the agent's
/// samples (a blob at the origin to begin with) follow the moving reward.
#[test]
fn a_users_agent_reward_and_environment_train_through_irl_iteration() {
    let dev = Cpu::default();
    let (n_steps, batch, iterations, n_critic) = (4, 64, 150, 2);
    let data_centre = [1.5f32, -1.0];
    let reward = shared::<Cpu, _>(CentreReward {
        centre: [0.0, 0.0],
        rate: 0.1,
        learn_calls: 0,
        negatives_seen: 0,
    });
    let mut env = BlobEnv {
        n_steps,
        batch,
        reward: reward.clone(),
        rng: seeded(0, 9),
        t: None,
        resets: 0,
    };
    let mut agent = PlainReinforce::new(blob_policy(n_steps, 1), 2e-3);
    let mut expert = |n: usize, rng: &mut ProjectRng| {
        let mut x = normal_matrix(&dev, rng, n, DIM).as_vec();
        for (k, v) in x.iter_mut().enumerate() {
            *v = data_centre[k % DIM] + 0.3 * *v;
        }
        matrix(&dev, x, n, DIM)
    };

    let mut eval_rng = seeded(7, 1);
    let before = mean_squared_distance(
        &agent.policy.sample(1000, &mut eval_rng).as_vec(),
        data_centre,
    );
    let mut rng = seeded(3, 0);
    let mut last = Stats::new();
    for it in 0..iterations {
        last = irl_iteration(
            &mut env,
            &mut agent,
            &*reward,
            &mut expert,
            n_critic,
            1000 + it,
            &mut rng,
            it,
        )
        .unwrap();
    }
    let after = mean_squared_distance(
        &agent.policy.sample(1000, &mut eval_rng).as_vec(),
        data_centre,
    );

    // The loop drove all three plug-ins.
    assert_eq!(env.resets, iterations as usize);
    assert_eq!(agent.updates, iterations as usize);
    let r = reward.borrow();
    assert_eq!(r.learn_calls, iterations as usize * n_critic);
    assert_eq!(r.negatives_seen, iterations as usize * n_critic * batch);
    for key in [
        "centre/gap",
        "reward/return_mean",
        "reward/return_std",
        "plain/reward_mean",
        "policy/sigma_1",
        "policy/sigma_2",
    ] {
        assert!(last.iter().any(|(k, _)| k == key), "no {key} in {last:?}");
    }
    // The environment scores finished episodes with the shared (learned) reward.
    drop(r);
    let rollout = collect_rollout(&mut env, &mut agent, Some(1), &mut rng).unwrap();
    assert_eq!(rollout.n_steps(), n_steps);
    assert_eq!(rollout.log_probs.len(), n_steps);
    let expected = reward.borrow().reward(rollout.samples()).unwrap();
    assert_eq!(rollout.terminal_reward.as_vec(), expected.as_vec());
    let r = reward.borrow();
    // The reward's centre moved from the origin to the data mean.
    let gap =
        ((r.centre[0] - data_centre[0]).powi(2) + (r.centre[1] - data_centre[1]).powi(2)).sqrt();
    assert!(gap < 0.1, "centre {:?} vs data {data_centre:?}", r.centre);
    // The agent's samples moved toward the data.
    assert!(
        after < 0.5 * before,
        "mean ‖x0 - data centre‖²: {before} → {after}"
    );
}

/// A sampler that starts as a blob at the origin (never trained on the mixture) learns,
/// from the exact log-density alone, to put its samples on the two modes.
#[test]
fn reinforce_with_the_oracle_reward_raises_the_log_density_of_samples() {
    let dev = Cpu::default();
    let (n_steps, batch, iterations) = (4, 128, 300);
    let law = GaussianMixture::new(
        "two-modes",
        vec![vec![-1.5, 0.0], vec![1.5, 0.0]],
        vec![0.3, 0.3],
        vec![1.0, 1.0],
    )
    .unwrap();
    let oracle = shared::<Cpu, _>(OracleReward::new(Arc::new(law.clone())).unwrap());
    let shared_oracle: SharedReward<Cpu> = oracle.clone();
    let mut env = DenoisingEnv::new(dev.clone(), DIM, n_steps, batch, shared_oracle, 0).unwrap();
    let config = ReinforceConfig {
        lr: 2e-3,
        lr_log_sigma: 1e-3,
        ..ReinforceConfig::default()
    };
    let mut agent = Reinforce::new(blob_policy(n_steps, 2), Box::new(LeaveOneOut), config).unwrap();
    let expert_law = law.clone();
    let mut expert =
        |n: usize, rng: &mut ProjectRng| matrix(&dev, expert_law.sample(n, rng), n, DIM);

    let mean_log_density = |policy: &GaussianPolicy<Cpu>, seed: u64| -> f64 {
        let samples = policy.sample(2000, &mut seeded(seed, 1)).as_vec();
        let densities = law.log_density(&samples).unwrap();
        densities.iter().sum::<f64>() / densities.len() as f64
    };
    let before = mean_log_density(&agent.policy, 5);
    let mut rng = seeded(4, 0);
    for it in 0..iterations {
        irl_iteration(
            &mut env,
            &mut agent,
            &*oracle,
            &mut expert,
            1,
            2000 + it,
            &mut rng,
            it,
        )
        .unwrap();
    }
    let after = mean_log_density(&agent.policy, 5);
    assert!(
        after > before + 2.0,
        "mean exact log-density of samples {before} → {after}"
    );
}
