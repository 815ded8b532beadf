//! Noise schedules against their closed forms (docs/algorithms.md §1).

use denoise_gym::schedule::{
    vp_alpha_bar, vp_time, Schedule, ScheduleKind, VP_BETA_MAX, VP_BETA_MIN,
};

#[test]
fn vp_alpha_bar_telescopes_to_the_continuous_form() {
    for n_steps in [1, 2, 4, 10, 100, 1000] {
        let s = Schedule::new(ScheduleKind::Vp, n_steps).unwrap();
        // ᾱ_T = Π ᾱ(s_t)/ᾱ(s_{t-1}) = ᾱ(s_T)/ᾱ(s_0) when no β hits the 0.999 clamp.
        let expected = vp_alpha_bar(vp_time(n_steps, n_steps), VP_BETA_MIN, VP_BETA_MAX)
            / vp_alpha_bar(vp_time(0, n_steps), VP_BETA_MIN, VP_BETA_MAX);
        let got = s.alpha_bar(n_steps);
        if (1..=n_steps).all(|t| s.beta(t) < 0.999) {
            assert!(
                (got / expected - 1.0).abs() < 1e-9,
                "T={n_steps}: {got} vs {expected}"
            );
        }
        assert!(got < 1e-2, "vp must reach the prior, T={n_steps}: {got}");
        assert!(s.check_prior(false).is_ok());
    }
}

#[test]
fn vp_at_t4_has_spec_values() {
    let s = Schedule::new(ScheduleKind::Vp, 4).unwrap();
    // docs/algorithms.md §8: the frozen σ_1 = √β_1 is 0.69 at T = 4.
    assert!(
        (s.beta(1).sqrt() - 0.69).abs() < 0.01,
        "sqrt(beta_1) = {}",
        s.beta(1).sqrt()
    );
    assert_eq!(s.alpha_bar(0), 1.0);
}

#[test]
fn linear_respacing_keeps_the_1000_step_alpha_bars() {
    let mut full = vec![1.0f64];
    for i in 0..1000 {
        let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0;
        full.push(full[full.len() - 1] * (1.0 - beta));
    }
    for n_steps in [4, 10, 1000] {
        let s = Schedule::new(ScheduleKind::Linear, n_steps).unwrap();
        for k in 1..=n_steps {
            let index = (k as f64 * 999.0 / n_steps as f64).round() as usize;
            let expected = full[index + 1];
            assert!(
                (s.alpha_bar(k) / expected - 1.0).abs() < 1e-9,
                "T={n_steps} k={k}"
            );
        }
    }
}

#[test]
fn cosine_matches_nichol_dhariwal() {
    let n_steps = 10;
    let s = Schedule::new(ScheduleKind::Cosine, n_steps).unwrap();
    let f = |t: f64| {
        (((t / n_steps as f64 + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    for t in 1..n_steps {
        let expected = f(t as f64) / f(0.0);
        assert!((s.alpha_bar(t) / expected - 1.0).abs() < 1e-9, "t={t}");
    }
    // f(T) = 0 would give β_T = 1: the clamp leaves ᾱ_T = 0.001 ᾱ_{T-1}.
    assert!((s.beta(n_steps) - 0.999).abs() < 1e-12);
}

#[test]
fn posterior_coefficients_match_closed_forms_and_moment_identities() {
    for kind in [ScheduleKind::Vp, ScheduleKind::Linear, ScheduleKind::Cosine] {
        let s = Schedule::new(kind, 6).unwrap();
        for t in 1..=6 {
            let (ab, ab_prev, beta) = (s.alpha_bar(t), s.alpha_bar(t - 1), s.beta(t));
            assert!((s.posterior_c1(t) - ab_prev.sqrt() * beta / (1.0 - ab)).abs() < 1e-12);
            assert!(
                (s.posterior_c2(t) - (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab)).abs()
                    < 1e-12
            );
            // E[x_{t-1} | x_0] = √ᾱ_{t-1} x_0 through the posterior.
            let mean_identity = s.posterior_c1(t) + s.posterior_c2(t) * ab.sqrt();
            assert!(
                (mean_identity - ab_prev.sqrt()).abs() < 1e-9,
                "{kind} t={t}"
            );
            // Var[x_{t-1} | x_0] = 1 - ᾱ_{t-1} = β̃_t + c2² (1 - ᾱ_t).
            let variance_identity = s.beta_tilde(t) + s.posterior_c2(t).powi(2) * (1.0 - ab);
            assert!(
                (variance_identity - (1.0 - ab_prev)).abs() < 1e-9,
                "{kind} t={t}"
            );
        }
        assert_eq!(s.beta_tilde(1), 0.0);
    }
}

#[test]
fn zero_steps_and_unmatched_prior_are_errors() {
    let err = Schedule::new(ScheduleKind::Vp, 0).unwrap_err().to_string();
    assert!(err.contains("at least 1"), "{err}");
    let weak = Schedule::with_vp_range(ScheduleKind::Vp, 4, 0.1, 2.0).unwrap();
    let err = weak.check_prior(false).unwrap_err().to_string();
    assert!(
        err.contains("prior") && err.contains("allow_unmatched_prior"),
        "{err}"
    );
    assert!(weak.check_prior(true).is_ok());
}
