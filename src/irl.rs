//! The inverse-RL loop (docs/algorithms.md §3-4), generic over the environment, the agent and the
//! reward: rollout → reward update(s) on data versus the policy's samples → policy update
//! against the updated reward. It owns the alternation and nothing else.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use crate::agent::{Agent, Stats};
use crate::checkpoint::Checkpoint;
use crate::env::DenoisingEnvironment;
use crate::error::{ensure_finite, Error, Result};
use crate::nn::Parameterized;
use crate::optim::WeightEma;
use crate::policy::GaussianPolicy;
use crate::reward::LearnedReward;
use crate::rng::{rng_from_json, rng_to_json, ProjectRng};
use crate::rollout::collect_rollout;
use crate::sampler::Sampler;
use crate::tensor::{Backend, Matrix};
use crate::train::Phase;

/// A source of expert batches: `n` data points as a `n × d` matrix.
pub type ExpertSampler<'a, D> = dyn FnMut(usize, &mut ProjectRng) -> Matrix<D> + 'a;

/// One IRL iteration. `env` must score episodes with the same reward model as `reward`
/// (share it with [`crate::reward::shared`]). `env_seed` re-seeds the environment's
/// `x_T` draw, so the iteration is reproducible from the checkpointed `rng` and the
/// iteration number alone.
///
/// The `n_critic` reward updates use a fresh expert batch each; the first uses the
/// rollout's samples as negatives, later ones fresh samples of the current policy. The
/// rollout's terminal rewards are then recomputed under the updated reward before the
/// agent's update, as DxMI does.
#[allow(clippy::too_many_arguments)]
pub fn irl_iteration<D, E, A, R>(
    env: &mut E,
    agent: &mut A,
    reward: &RefCell<R>,
    expert: &mut ExpertSampler<'_, D>,
    n_critic: usize,
    env_seed: u64,
    rng: &mut ProjectRng,
    iteration: u64,
) -> Result<Stats>
where
    D: Backend,
    E: DenoisingEnvironment<D> + ?Sized,
    A: Agent<D> + ?Sized,
    R: LearnedReward<D> + ?Sized,
{
    let mut rollout = collect_rollout(env, agent, Some(env_seed), rng)?;
    let batch = rollout.batch_size();
    let mut stats = Stats::new();
    for k in 0..n_critic {
        let positive = expert(batch, rng);
        let negative = if k == 0 {
            rollout.samples().clone()
        } else {
            agent.policy().sample(batch, rng)
        };
        stats = reward.borrow_mut().learn(&positive, &negative, iteration)?;
    }
    rollout.terminal_reward = reward.borrow().reward(rollout.samples())?;
    let terminal = rollout.terminal_reward.as_vec();
    let (mean, std) = crate::metrics::mean_std(&terminal);
    ensure_finite("reward/return_mean", mean, iteration)?;
    stats.push(("reward/return_mean".to_string(), mean));
    stats.push(("reward/return_std".to_string(), std));
    stats.extend(agent.update(&rollout, rng, iteration)?);
    for (t, sigma) in agent.policy().sigmas().iter().enumerate() {
        stats.push((format!("policy/sigma_{}", t + 1), *sigma as f64));
    }
    Ok(stats)
}

/// A well-mixed seed for the environment's `x_T` draw at `iteration` of a run seeded
/// with `seed`.
pub fn env_seed(seed: u64, iteration: u64) -> u64 {
    let mut z = seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The name of the IRL phase (its `phase` in checkpoints and `metrics.csv`).
pub const PHASE: &str = "finetune";

/// The inverse-RL loop as a [`Phase`]: GCD with a score-function agent (REINFORCE, PPO,
/// a user's own) or DxMI with DxDP, against a learned reward (or a fixed one, such as the
/// oracle), on expert batches. Each [`Phase::step`] is one [`irl_iteration`], followed
/// by the optional weight EMA of the fine-tuned ε-network.
pub struct IrlPhase<D, E, R>
where
    D: Backend,
    E: DenoisingEnvironment<D>,
    R: LearnedReward<D> + ?Sized,
{
    /// The agent (owns the policy).
    pub agent: Box<dyn Agent<D>>,
    /// The reward, shared with the environment (and with a pathwise agent).
    pub reward: Rc<RefCell<R>>,
    /// The denoising environment.
    pub env: E,
    /// The phase's RNG: expert batches, extra policy samples, the agent's own draws.
    pub rng: ProjectRng,
    /// Iterations of this phase done.
    pub iteration: u64,
    /// Global step of iteration 0 (the steps of the phases before it).
    pub step_offset: u64,
    /// Optional weight EMA of the fine-tuned ε-network (the sampler when kept).
    pub ema: Option<WeightEma<D>>,
    expert: Box<ExpertSampler<'static, D>>,
    n_critic: usize,
    seed: u64,
}

impl<D, E, R> IrlPhase<D, E, R>
where
    D: Backend,
    E: DenoisingEnvironment<D>,
    R: LearnedReward<D> + ?Sized,
{
    /// A fresh phase. `env` must score episodes with `reward`; `seed` (the run's) fixes
    /// each iteration's `x_T` draw through [`env_seed`]; `n_critic` reward updates per
    /// iteration; `ema_decay > 0` keeps a weight EMA as the sampler.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent: Box<dyn Agent<D>>,
        reward: Rc<RefCell<R>>,
        env: E,
        expert: Box<ExpertSampler<'static, D>>,
        n_critic: usize,
        seed: u64,
        rng: ProjectRng,
        step_offset: u64,
        ema_decay: f64,
    ) -> Result<Self> {
        if n_critic == 0 {
            return Err(Error::config("n_critic", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&ema_decay) {
            return Err(Error::config("ema_decay", "must be in [0, 1)"));
        }
        let ema = (ema_decay > 0.0)
            .then(|| WeightEma::new(&agent.policy().eps_net.parameters(), ema_decay));
        Ok(Self {
            agent,
            reward,
            env,
            rng,
            iteration: 0,
            step_offset,
            ema,
            expert,
            n_critic,
            seed,
        })
    }

    /// The fine-tuned sampler (EMA weights when kept).
    pub fn sampler(&self) -> GaussianPolicy<D> {
        let mut sampler = self.agent.policy().clone();
        if let Some(ema) = &self.ema {
            ema.copy_to(sampler.eps_net.parameters_mut());
        }
        sampler
    }
}

impl<D, E, R> Phase<D> for IrlPhase<D, E, R>
where
    D: Backend,
    E: DenoisingEnvironment<D>,
    R: LearnedReward<D> + ?Sized,
{
    fn name(&self) -> &str {
        PHASE
    }
    fn iterations_done(&self) -> u64 {
        self.iteration
    }
    fn global_step(&self) -> u64 {
        self.step_offset + self.iteration
    }
    fn step(&mut self) -> Result<Stats> {
        let next = self.iteration + 1;
        let stats = irl_iteration(
            &mut self.env,
            self.agent.as_mut(),
            self.reward.as_ref(),
            &mut *self.expert,
            self.n_critic,
            env_seed(self.seed, next),
            &mut self.rng,
            self.step_offset + next,
        )?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&self.agent.policy().eps_net.parameters());
        }
        self.iteration = next;
        Ok(stats)
    }
    fn save(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        self.agent.save(&mut c, "agent")?;
        self.reward.borrow().save(&mut c, "reward")?;
        let policy = self.agent.policy();
        let meta = &mut c.metadata;
        meta.insert("finetune_iteration".into(), self.iteration.to_string());
        meta.insert("step_offset".into(), self.step_offset.to_string());
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), policy.dim().to_string());
        meta.insert("n_steps".into(), policy.n_steps().to_string());
        meta.insert(
            "reward_kind".into(),
            self.reward.borrow().name().to_string(),
        );
        meta.insert("sampler_prefix".into(), "agent.policy".into());
        if let Some(ema) = &self.ema {
            let names = policy.eps_net.parameter_names();
            c.put_matrices(
                "finetune_ema",
                &names,
                &ema.shadow.iter().collect::<Vec<_>>(),
            );
            c.metadata.insert("sampler_weights".into(), "ema".into());
            c.metadata
                .insert("sampler_ema_prefix".into(), "finetune_ema".into());
        } else {
            c.metadata
                .insert("sampler_weights".into(), "current".into());
        }
        Ok(c)
    }
    fn load(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        self.agent.load(c, path, "agent")?;
        self.reward.borrow_mut().load(c, path, "reward")?;
        self.iteration = c.meta_parse(path, "finetune_iteration")?;
        self.step_offset = c.meta_parse(path, "step_offset")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        if let Some(ema) = self.ema.as_mut() {
            let names = self.agent.policy().eps_net.parameter_names();
            c.load_matrices(
                path,
                "finetune_ema",
                &names,
                ema.shadow.iter_mut().collect(),
            )?;
        }
        Ok(())
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        Box::new(IrlPhase::sampler(self))
    }
}
