//! The run loop as a library: a user's own agent trains DSM then GCD through `Trainer`
//! (examples/custom_agent.rs), stopped and resumed to the same numbers; a user's
//! own `Phase`; the trainer's guards.

use std::path::Path;

use denoise_gym::agent::Stats;
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::error::{Error, Result};
use denoise_gym::log::{
    read_metrics_csv, read_tensorboard_events, read_tensorboard_scalars, CsvRow, HParam,
};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::sampler::Sampler;
use denoise_gym::train::{Cadence, Phase, PhaseEnd, Trainer, TrainerOptions};
use dfdx::prelude::*;

#[allow(dead_code)]
#[path = "../examples/custom_agent.rs"]
mod example;

use example::{train, Settings};

const TINY: Settings = Settings {
    pretrain_iterations: 200,
    finetune_iterations: 40,
    hidden: 32,
};

/// The rows of `metrics.csv` without the wall-clock columns.
fn rows_without_time(dir: &Path) -> Vec<CsvRow> {
    let (_, mut rows) = read_metrics_csv(&dir.join("metrics.csv")).unwrap();
    for row in &mut rows {
        row.values.retain(|k, _| !k.starts_with("time/"));
    }
    rows
}

#[test]
fn a_user_agent_trains_dsm_then_gcd_and_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert!(train(&whole, &TINY, None).unwrap());

    // Killed mid-pretraining, then mid-GCD (after the hand-over), then run to the end.
    let pieces = tmp.path().join("pieces");
    assert!(!train(&pieces, &TINY, Some(130)).unwrap());
    assert!(!pieces.join("summary.json").exists());
    assert!(!train(&pieces, &TINY, Some(120)).unwrap());
    assert!(train(&pieces, &TINY, None).unwrap());

    let (a, b) = (rows_without_time(&whole), rows_without_time(&pieces));
    assert_eq!(a, b, "a stopped and resumed run must log the same numbers");
    let phases: Vec<&str> = a.iter().map(|r| r.phase.as_str()).collect();
    assert!(phases.contains(&"pretrain") && phases.contains(&"finetune"));
    let last = a.last().unwrap();
    assert_eq!(last.step, 240, "one step counter across both phases");
    for key in [
        "reward/return_mean",
        "ebm/energy_pos",
        "ebm/energy_neg",
        "plain/grad_norm",
    ] {
        assert!(last.values.contains_key(key), "{key} missing from {last:?}");
    }

    // GCD moved the sampler: the energy gap between data and samples is logged and the
    // DSM loss fell during pretraining.
    let dsm: Vec<f64> = a
        .iter()
        .filter_map(|r| r.values.get("dsm/loss").copied())
        .collect();
    assert!(dsm.last().unwrap() < &(0.8 * dsm[0]), "DSM loss {dsm:?}");

    // The event files read back (length and CRC of every record checked) and hold the
    // same steps as metrics.csv, one file per invocation for the resumed run.
    let events = |dir: &Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("tfevents"))
            .collect();
        files.sort();
        files
    };
    assert_eq!(events(&whole).len(), 1);
    assert_eq!(events(&pieces).len(), 3);
    // Each resumed file opens with a SessionLog START just after its checkpoint's step,
    // which makes TensorBoard drop what the earlier file logged past the checkpoint.
    let starts: Vec<i64> = events(&pieces)[1..]
        .iter()
        .map(|f| {
            let first = read_tensorboard_events(f).unwrap();
            let start = first
                .iter()
                .find(|e| e.has_session_log())
                .expect("a session log in a resumed file");
            assert_eq!(
                start.get_session_log().get_status(),
                tensorboard_proto::event::SessionLog_SessionStatus::START
            );
            start.get_step()
        })
        .collect();
    assert_eq!(
        starts,
        vec![101, 201],
        "checkpoints at step 100 and at the hand-over, 200"
    );
    let scalars = read_tensorboard_scalars(&events(&whole)[0]).unwrap();
    let losses: Vec<(u64, f64)> = scalars
        .iter()
        .filter(|s| s.tag == "dsm/loss")
        .map(|s| (s.step as u64, s.value as f64))
        .collect();
    let csv_losses: Vec<(u64, f64)> = a
        .iter()
        .filter_map(|r| r.values.get("dsm/loss").map(|v| (r.step, *v)))
        .collect();
    assert_eq!(losses.len(), csv_losses.len());
    for ((s1, v1), (s2, v2)) in losses.iter().zip(&csv_losses) {
        assert_eq!(s1, s2);
        assert!((v1 - v2).abs() <= 1e-6 * v2.abs().max(1.0), "{v1} vs {v2}");
    }

    // A finished run is not resumed again.
    let err = train(&whole, &TINY, None).unwrap_err().to_string();
    assert!(err.contains("already finished"), "{err}");
}

/// A user's own phase: a counter whose scalar turns NaN at one iteration.
struct Counter {
    done: u64,
    nan_at: Option<u64>,
    policy: GaussianPolicy<Cpu>,
}

impl Phase<Cpu> for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn iterations_done(&self) -> u64 {
        self.done
    }
    fn global_step(&self) -> u64 {
        self.done
    }
    fn step(&mut self) -> Result<Stats> {
        self.done += 1;
        let value = if Some(self.done) == self.nan_at {
            f64::NAN
        } else {
            self.done as f64
        };
        Ok(vec![("counter/value".to_string(), value)])
    }
    fn save(&self) -> Result<Checkpoint> {
        Ok(Checkpoint::new())
    }
    fn load(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        self.done = c.meta_parse(path, "iteration")?;
        Ok(())
    }
    fn sampler(&self) -> Box<dyn Sampler<Cpu> + '_> {
        Box::new(self.policy.clone())
    }
}

fn counter(nan_at: Option<u64>) -> Counter {
    let spec = denoise_gym::policy::PolicySpec {
        dim: 2,
        hidden: 8,
        depth: 1,
        time_embed_dim: 4,
        activation: denoise_gym::nn::Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma: false,
        last_sigma: 0.0,
    };
    let schedule =
        denoise_gym::schedule::Schedule::new(denoise_gym::schedule::ScheduleKind::Vp, 2).unwrap();
    let mut rng = denoise_gym::rng::seeded(0, 0);
    Counter {
        done: 0,
        nan_at,
        policy: GaussianPolicy::new(&Cpu::default(), spec, schedule, &mut rng).unwrap(),
    }
}

#[test]
fn the_trainer_stops_a_phase_at_a_non_finite_scalar_and_names_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut trainer = Trainer::<Cpu>::create(&dir, "", 0, TrainerOptions::default()).unwrap();
    let mut phase = counter(Some(23));
    let err = trainer
        .run(&mut phase, Cadence::new(50, 1, 10))
        .unwrap_err();
    let text = format!("{err} / {}", std::error::Error::source(&err).unwrap());
    assert!(
        matches!(&err, Error::PhaseStopped { source, .. } if matches!(**source, Error::NonFinite { iteration: 23, .. })),
        "{text}"
    );
    assert!(
        text.contains("counter/value") && text.contains("(step 20)"),
        "{text}"
    );
    // The rows before the NaN are durable; the NaN row was never written.
    let (_, rows) = read_metrics_csv(&dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().step, 22);

    // With the guard off the same phase runs through.
    let dir = tmp.path().join("allowed");
    let options = TrainerOptions {
        allow_non_finite: true,
        ..TrainerOptions::default()
    };
    let mut trainer = Trainer::<Cpu>::create(&dir, "", 0, options).unwrap();
    let end = trainer
        .run(&mut counter(Some(23)), Cadence::new(50, 1, 10))
        .unwrap();
    assert!(matches!(end, PhaseEnd::Finished { iterations: 50, .. }));
}

#[test]
fn a_new_run_refuses_a_busy_directory_and_a_resume_restores_only_its_own_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let options = TrainerOptions {
        stop_after: Some(15),
        ..TrainerOptions::default()
    };
    let mut trainer = Trainer::<Cpu>::create(&dir, "x = 1\n", 7, options).unwrap();
    let hparams = [
        ("policy.hidden".to_string(), HParam::Number(16.0)),
        ("finetune.agent".to_string(), HParam::Text("ppo".into())),
    ];
    trainer.log_hparams(&hparams, "x = 1").unwrap();
    assert!(trainer
        .run(&mut counter(None), Cadence::new(50, 5, 10))
        .unwrap()
        .stopped());
    drop(trainer);
    let err = Trainer::<Cpu>::create(&dir, "", 0, TrainerOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not empty"), "{err}");

    let mut trainer = Trainer::<Cpu>::resume(&dir, 7, TrainerOptions::default()).unwrap();
    assert!(trainer.resumes_phase("counter") && !trainer.resumes_phase("pretrain"));
    let mut phase = counter(None);
    assert!(trainer.restore(&mut phase).unwrap());
    assert_eq!(phase.done, 10, "the last checkpoint was at iteration 10");
    assert!(
        !trainer.restore(&mut counter(None)).unwrap(),
        "restored once"
    );
    trainer.run(&mut phase, Cadence::new(50, 5, 10)).unwrap();
    trainer.finish(serde_json::json!({})).unwrap();
    // Rows after the checkpoint (step 15) were dropped and logged again: one per step.
    let (_, rows) = read_metrics_csv(&dir.join("metrics.csv")).unwrap();
    let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=10).map(|k| 5 * k).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_to_string(dir.join("config.toml")).unwrap(),
        "x = 1\n"
    );
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["invocations"].as_array().unwrap().len(), 2);
    assert_eq!(run_json["invocations"][1]["resumed_from_step"], 10);

    // The HParams plugin's session start (in the first file) and end (in the last), and
    // the config as text.
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("tfevents"))
        .collect();
    files.sort();
    let plugin_tags = |path: &Path| -> Vec<(String, String)> {
        read_tensorboard_events(path)
            .unwrap()
            .iter()
            .filter(|e| e.has_summary())
            .flat_map(|e| e.get_summary().get_value().to_vec())
            .filter(|v| v.has_metadata())
            .map(|v| {
                let plugin = v
                    .get_metadata()
                    .get_plugin_data()
                    .get_plugin_name()
                    .to_string();
                (plugin, v.get_tag().to_string())
            })
            .collect()
    };
    let first = plugin_tags(&files[0]);
    assert!(first.contains(&("hparams".into(), "_hparams_/session_start_info".into())));
    assert!(first.contains(&("text".into(), "config".into())));
    let last = plugin_tags(files.last().unwrap());
    assert!(last.contains(&("hparams".into(), "_hparams_/session_end_info".into())));
}

#[test]
fn the_irl_phase_refuses_zero_reward_updates() {
    use denoise_gym::ebm::{ContrastiveConfig, EbmReward, EnergyModel};
    use denoise_gym::irl::IrlPhase;
    use denoise_gym::reward::shared;
    let dev = Cpu::default();
    let mut rng = denoise_gym::rng::seeded(0, 0);
    let energy = EnergyModel::new(&dev, 2, 8, 1, denoise_gym::nn::Activation::Silu, &mut rng);
    let reward = shared(EbmReward::new(energy, ContrastiveConfig::default()).unwrap());
    let env = denoise_gym_envs::DenoisingEnv::new(dev.clone(), 2, 2, 4, reward.clone(), 0).unwrap();
    let policy = counter(None).policy;
    let agent = denoise_gym_agents::Reinforce::new(
        policy,
        denoise_gym_agents::make_baseline(
            "none",
            &dev,
            2,
            2,
            &denoise_gym_agents::ValueBaselineConfig {
                hidden: 8,
                depth: 1,
                ..Default::default()
            },
            &mut rng,
        )
        .unwrap(),
        denoise_gym_agents::ReinforceConfig::default(),
    )
    .unwrap();
    let expert = Box::new(move |n: usize, _: &mut denoise_gym::rng::ProjectRng| {
        denoise_gym::tensor::matrix(&Cpu::default(), vec![0.0; n * 2], n, 2)
    });
    let err = IrlPhase::new(Box::new(agent), reward, env, expert, 0, 0, rng, 0, 0.0)
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Config { ref location, .. } if location == "n_critic"),
        "{err}"
    );
}
