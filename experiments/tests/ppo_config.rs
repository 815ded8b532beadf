//! The PPO and diffusion-RL keys of a `dgym train` config: the shipped PPO configs load,
//! optional keys can be set with `--set`, and every bad value is an error naming the
//! file and the key.

use std::path::{Path, PathBuf};

use denoise_gym_experiments::builtin;
use denoise_gym_experiments::config::TrainConfig;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

#[test]
fn the_ppo_configs_load_with_ppo_and_its_options() {
    for name in ["ppo-8gaussians.toml", "ppo-25gaussians.toml"] {
        let config =
            TrainConfig::load(Some(&shipped(name)), &[], &builtin::catalog().unwrap()).unwrap();
        assert_eq!(config.finetune.agent, "ppo", "{name}");
        let ppo = &config.ppo;
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
    let config = TrainConfig::load(Some(&base), &[], &builtin::catalog().unwrap()).unwrap();
    assert_eq!(config.agent.ft_steps, None);
    assert_eq!(config.agent.min_sigma_sample, None);
    let set = [
        "agent.ft_steps=2",
        "agent.min_sigma_sample=0.05",
        "agent.min_sigma_logprob=0.1",
        "ppo.target_kl=0.02",
        "agent.gamma_denoising=0.9",
    ]
    .map(String::from);
    let config = TrainConfig::load(Some(&base), &set, &builtin::catalog().unwrap()).unwrap();
    let shared = &config.agent;
    assert_eq!(shared.ft_steps, Some(2));
    assert_eq!(shared.min_sigma_sample, Some(0.05));
    assert_eq!(shared.min_sigma_logprob, Some(0.1));
    assert_eq!(shared.gamma_denoising, 0.9);
    assert_eq!(config.ppo.target_kl, Some(0.02));
    // A key no section has is still unknown.
    let err = TrainConfig::load(
        Some(&base),
        &["agent.ft_step=2".to_string()],
        &builtin::catalog().unwrap(),
    )
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
        (&["ppo.clip=0"], "ppo.clip", "(0, 1)"),
        (&["ppo.epochs=0"], "ppo.epochs", "at least 1"),
        (&["ppo.target_kl=0"], "ppo.target_kl", "> 0"),
        (
            &["ppo.minibatch_size=0"],
            "ppo.minibatch_size",
            "at least 1",
        ),
        // Larger than the batch: 256 samples × 4 steps, or × ft_steps when set.
        (&["ppo.minibatch_size=1025"], "ppo.minibatch_size", "1024"),
        (
            &["ppo.minibatch_size=600", "agent.ft_steps=2"],
            "ppo.minibatch_size",
            "512",
        ),
        (&["agent.kl_reference=-1"], "agent.kl_reference", "≥ 0"),
        (&["agent.kl_reference=inf"], "agent.kl_reference", "≥ 0"),
        // A key's old name (before [ppo] had its own section) is blamed by its new one.
        (&["agent.ppo_clip=0"], "ppo.clip", "(0, 1)"),
    ];
    for (sets, key, expected) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = TrainConfig::load(Some(&base), &sets, &builtin::catalog().unwrap())
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
            &builtin::catalog().unwrap(),
        )
    };
    assert!(reinforce("ppo.minibatch_size=5000").is_ok());
    let err = reinforce("agent.ft_steps=9").unwrap_err().to_string();
    assert!(err.contains("agent.ft_steps"), "{err}");
}

/// Configs written before PPO's settings, the baseline's choice and the value baseline's
/// network moved (`agent.ppo_*`, `agent.baseline`, `agent.value_*`) load to the same config
/// as today's keys, in a file and through `--set`; an old key beside its new one is refused.
#[test]
fn old_keys_load_to_the_same_config_as_their_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = builtin::catalog().unwrap();
    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        "[finetune]\niterations = 10\nagent = \"ppo\"\n\n[agent]\nlr = 3e-4\nbaseline = \"ema\"\n\
         ppo_clip = 0.1\nppo_epochs = 2\nppo_minibatch_size = 64\nppo_target_kl = 0.5\n\
         value_hidden = 32\nvalue_depth = 1\nvalue_time_embed_dim = 8\nvalue_lr = 2e-3\nvalue_steps = 3\n",
    )
    .unwrap();
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        "[finetune]\niterations = 10\nagent = \"ppo\"\nbaseline = \"ema\"\n\n[agent]\nlr = 3e-4\n\n\
         [ppo]\nclip = 0.1\nepochs = 2\nminibatch_size = 64\ntarget_kl = 0.5\n\n\
         [value_baseline]\nhidden = 32\ndepth = 1\ntime_embed_dim = 8\nlr = 2e-3\nsteps = 3\n",
    )
    .unwrap();
    let from_old = TrainConfig::load(Some(&old), &[], &catalog).unwrap();
    let from_new = TrainConfig::load(Some(&new), &[], &catalog).unwrap();
    assert_eq!(from_old, from_new);
    assert_eq!(from_new.ppo.clip, 0.1);
    assert_eq!(from_new.finetune.baseline, "ema");
    assert_eq!(from_new.value_baseline.steps, 3);

    let set_old = ["agent.ppo_epochs=7", "agent.baseline=\"none\""].map(String::from);
    let set_new = ["ppo.epochs=7", "finetune.baseline=\"none\""].map(String::from);
    assert_eq!(
        TrainConfig::load(Some(&new), &set_old, &catalog).unwrap(),
        TrainConfig::load(Some(&new), &set_new, &catalog).unwrap()
    );

    let both = dir.path().join("both.toml");
    std::fs::write(&both, "[agent]\nppo_clip = 0.1\n\n[ppo]\nclip = 0.3\n").unwrap();
    let err = TrainConfig::load(Some(&both), &[], &catalog)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("both.toml") && err.contains("agent.ppo_clip") && err.contains("ppo.clip"),
        "{err}"
    );
}
