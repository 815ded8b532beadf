//! `[data]` reshaping of mixtures: unequal weights and thin modes for the GCD-vs-IPM study.

use denoise_gym::metrics::mode_stats;
use denoise_gym::rng::seeded;
use denoise_gym_experiments::build::build_dataset;
use denoise_gym_experiments::builtin;
use denoise_gym_experiments::config::{DataConfig, TrainConfig};

/// `[data]` built into a whole config.
fn dataset(data: &DataConfig) -> anyhow::Result<std::sync::Arc<dyn denoise_gym_envs::Dataset>> {
    let config = TrainConfig {
        data: data.clone(),
        ..TrainConfig::default()
    };
    build_dataset(&builtin::registry::<dfdx::tensor::Cpu>()?, &config)
}

#[test]
fn mixture_weights_and_std_reshape_the_eight_gaussians() {
    let config = DataConfig {
        dataset: "8gaussians".to_string(),
        mixture_weights: vec![8.0, 4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        mixture_std: 0.1,
        ..DataConfig::default()
    };
    let data = dataset(&config).unwrap();
    let mixture = data.as_mixture().expect("still a mixture");
    assert_eq!(mixture.weights()[0], 8.0 / 20.0);
    assert!(mixture.stds().iter().all(|&s| s == 0.1));
    let samples = data.sample(20_000, &mut seeded(0, 0));
    let stats = mode_stats(
        &samples,
        2,
        mixture.means(),
        mixture.stds(),
        mixture.weights(),
    )
    .unwrap();
    // Binomial std of a frequency at n = 20000 is at most 0.0035.
    for (k, (&seen, &wanted)) in stats.weights.iter().zip(mixture.weights()).enumerate() {
        assert!(
            (seen - wanted).abs() < 0.015,
            "mode {k}: {seen} vs {wanted}"
        );
    }
    // In 2-D, P(‖x - c‖ > 3σ) = exp(-9/2) ≈ 0.0111 whatever σ is.
    let expected_off = (-4.5f64).exp();
    assert!(
        (stats.off_mode_fraction - expected_off).abs() < 0.004,
        "{} vs {expected_off}",
        stats.off_mode_fraction
    );
}

#[test]
fn mixture_options_are_checked() {
    let wrong_count = DataConfig {
        dataset: "8gaussians".to_string(),
        mixture_weights: vec![1.0, 2.0],
        ..DataConfig::default()
    };
    let err = format!("{:#}", dataset(&wrong_count).err().unwrap());
    assert!(
        err.contains("data.mixture_weights") && err.contains("2 weights"),
        "{err}"
    );
    let not_mixture = DataConfig {
        dataset: "swissroll".to_string(),
        mixture_std: 0.1,
        ..DataConfig::default()
    };
    let err = format!("{:#}", dataset(&not_mixture).err().unwrap());
    assert!(err.contains("not a Gaussian mixture"), "{err}");
    let negative = DataConfig {
        dataset: "8gaussians".to_string(),
        mixture_std: -1.0,
        ..DataConfig::default()
    };
    let err = format!("{:#}", dataset(&negative).err().unwrap());
    assert!(err.contains("data.mixture_std"), "{err}");
}
