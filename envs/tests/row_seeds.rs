//! `DenoisingEnv::with_row_seeds`: row i of a batch seeded with s is the episode of a
//! batch-1 environment seeded with s + i, on the first reset and on every later one.

use std::sync::Arc;

use denoise_gym::env::Env;
use denoise_gym::reward::SharedReward;
use denoise_gym::tensor::CpuDevice as Cpu;
use denoise_gym_envs::{toy_dataset, DenoisingEnv, OracleReward};

fn oracle() -> SharedReward<Cpu> {
    let law = Arc::from(toy_dataset("8gaussians").unwrap());
    denoise_gym::reward::shared::<Cpu, _>(OracleReward::new(law).unwrap())
}

fn env(batch: usize, seed: u64, per_row: bool) -> DenoisingEnv<Cpu> {
    let env = DenoisingEnv::new(Cpu::default(), 2, 3, batch, oracle(), seed).unwrap();
    if per_row {
        env.with_row_seeds(seed)
    } else {
        env
    }
}

#[test]
fn each_row_is_the_single_episode_seeded_with_seed_plus_its_index() {
    let mut batch = env(4, 0, true);
    let mut singles: Vec<_> = (0..4).map(|_| env(1, 0, true)).collect();
    for (reset, seed) in [(0, Some(17u64)), (1, None), (2, Some(5))] {
        let rows = batch.reset(seed).unwrap().x.as_vec();
        for (i, single) in singles.iter_mut().enumerate() {
            let own = single.reset(seed.map(|s| s + i as u64)).unwrap().x.as_vec();
            assert_eq!(own, rows[2 * i..2 * i + 2], "reset {reset}, row {i}");
        }
    }
    // Rows differ from one another (they are not one stream repeated).
    let rows = batch.reset(Some(3)).unwrap().x.as_vec();
    assert_ne!(rows[0..2], rows[2..4]);
}

#[test]
fn a_single_row_draws_what_the_training_environment_draws() {
    // With one row the per-row generator is the batch generator: the single Gymnasium
    // environment seeded with s starts where the training environment seeded with s does.
    let mut per_row = env(1, 9, true);
    let mut batch = env(1, 9, false);
    for seed in [Some(11), None, Some(0)] {
        assert_eq!(
            per_row.reset(seed).unwrap().x.as_vec(),
            batch.reset(seed).unwrap().x.as_vec()
        );
    }
    // Before any seeded reset, the construction seed seeds row i with seed + i.
    let mut fresh = env(2, 40, true);
    let mut second = env(1, 41, true);
    assert_eq!(
        fresh.reset(None).unwrap().x.as_vec()[2..4],
        second.reset(None).unwrap().x.as_vec()[..]
    );
}
