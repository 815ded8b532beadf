//! The PPO and diffusion-RL keys of a `dgym train` config: the shipped PPO configs load,
//! optional keys can be set with `--set`, and every bad value is an error naming the
//! file and the key.

use std::path::{Path, PathBuf};

use denoise_gym_experiments::config::TrainConfig;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

#[test]
fn the_ppo_configs_load_with_ppo_and_its_options() {
    for name in ["ppo-8gaussians.toml", "ppo-25gaussians.toml"] {
        let config = TrainConfig::load(Some(&shipped(name)), &[]).unwrap();
        assert_eq!(config.finetune.agent, "ppo", "{name}");
        let ppo = config.ppo_config();
        assert!(ppo.minibatch_size.is_some(), "{name}");
        assert!(
            ppo.minibatch_size.unwrap() <= config.finetune.batch_size * config.policy.n_steps,
            "{name}"
        );
    }
}

#[test]
fn optional_keys_are_unset_by_default_and_settable() {
    let base = shipped("ppo-8gaussians.toml");
    let config = TrainConfig::load(Some(&base), &[]).unwrap();
    assert_eq!(config.agent.ft_steps, None);
    assert_eq!(config.agent.min_sigma_sample, None);
    let set = [
        "agent.ft_steps=2",
        "agent.min_sigma_sample=0.05",
        "agent.min_sigma_logprob=0.1",
        "agent.ppo_target_kl=0.02",
        "agent.gamma_denoising=0.9",
    ]
    .map(String::from);
    let config = TrainConfig::load(Some(&base), &set).unwrap();
    let shared = config.reinforce_config();
    assert_eq!(shared.ft_steps, Some(2));
    assert_eq!(shared.min_sigma_sample, Some(0.05));
    assert_eq!(shared.min_sigma_logprob, Some(0.1));
    assert_eq!(shared.gamma_denoising, 0.9);
    assert_eq!(config.ppo_config().target_kl, Some(0.02));
    // A key no section has is still unknown.
    let err = TrainConfig::load(Some(&base), &["agent.ft_step=2".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key `agent.ft_step`"), "{err}");
}

#[test]
fn bad_values_name_the_file_and_key() {
    let base = shipped("ppo-8gaussians.toml");
    // ppo-8gaussians: T = 4, batch 256.
    let cases: &[(&[&str], &str, &str)] = &[
        (&["agent.ft_steps=5"], "agent.ft_steps", "1..=4"),
        (&["agent.ft_steps=0"], "agent.ft_steps", "1..=4"),
        (
            &["agent.min_sigma_sample=0"],
            "agent.min_sigma_sample",
            "> 0",
        ),
        (
            &["agent.min_sigma_logprob=-0.1"],
            "agent.min_sigma_logprob",
            "> 0",
        ),
        (
            &["agent.gamma_denoising=0"],
            "agent.gamma_denoising",
            "(0, 1]",
        ),
        (
            &["agent.gamma_denoising=1.5"],
            "agent.gamma_denoising",
            "(0, 1]",
        ),
        (&["agent.ppo_clip=0"], "agent.ppo_clip", "(0, 1)"),
        (&["agent.ppo_epochs=0"], "agent.ppo_epochs", "at least 1"),
        (&["agent.ppo_target_kl=0"], "agent.ppo_target_kl", "> 0"),
        (
            &["agent.ppo_minibatch_size=0"],
            "agent.ppo_minibatch_size",
            "at least 1",
        ),
        // Larger than the batch: 256 samples × 4 steps, or × ft_steps when set.
        (
            &["agent.ppo_minibatch_size=1025"],
            "agent.ppo_minibatch_size",
            "1024",
        ),
        (
            &["agent.ppo_minibatch_size=600", "agent.ft_steps=2"],
            "agent.ppo_minibatch_size",
            "512",
        ),
    ];
    for (sets, key, expected) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = TrainConfig::load(Some(&base), &sets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ppo-8gaussians.toml") && err.contains(key) && err.contains(expected),
            "{sets:?}: {err}"
        );
    }
    // The same options are checked for REINFORCE, where a PPO minibatch does not apply.
    let reinforce = |set: &str| {
        TrainConfig::load(
            Some(&base),
            &["finetune.agent=\"reinforce\"".to_string(), set.to_string()],
        )
    };
    assert!(reinforce("agent.ppo_minibatch_size=5000").is_ok());
    let err = reinforce("agent.ft_steps=9").unwrap_err().to_string();
    assert!(err.contains("agent.ft_steps"), "{err}");
}
