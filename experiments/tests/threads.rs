//! The fused kernels cut a pass into row blocks by its shape alone, so a run's numbers do
//! not depend on how many threads the pool has (`RAYON_NUM_THREADS`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{base_config, rows_without_time, stderr, train_args_for, TINY, TINY_FINETUNE};
use tempfile::TempDir;

#[test]
fn one_two_and_eight_threads_give_a_bit_identical_gcd_run() {
    // Batches of 1024 rows through 64-wide networks: every pass is cut into 8 blocks,
    // so the threads share the blocks differently at each count.
    let sets: Vec<&str> = TINY
        .iter()
        .chain(TINY_FINETUNE)
        .copied()
        .chain([
            "pretrain.batch_size=1024",
            "finetune.batch_size=1024",
            "policy.hidden=64",
            "policy.depth=2",
            "reward.depth=2",
            "reward.hidden=64",
            "value_baseline.hidden=64",
            "pretrain.iterations=40",
            "finetune.iterations=20",
        ])
        .collect();
    let policy_weights = (2 + 16) * 64 + 64 * 64 + 64 * 2;
    assert_eq!(
        denoise_gym::kernels::row_blocks(1024, 1024 * policy_weights).len(),
        8,
        "the policy's passes are cut into 8 blocks"
    );
    let tmp = TempDir::new().unwrap();
    let mut runs = Vec::new();
    for threads in [1, 2, 8] {
        let out = tmp.path().join(format!("threads-{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_dgym"))
            .args(train_args_for(&base_config(), &out, &sets))
            .env("RAYON_NUM_THREADS", threads.to_string())
            .current_dir(tmp.path())
            .output()
            .expect("cannot start dgym");
        assert!(o.status.success(), "{threads} threads: {}", stderr(&o));
        runs.push((threads, out));
    }
    let (_, first) = &runs[0];
    let reference = rows_without_time(first);
    assert_eq!(reference.len(), 40 / 5 + 20 / 5 + 1, "every logged row");
    for (threads, dir) in &runs[1..] {
        assert_eq!(
            rows_without_time(dir),
            reference,
            "{threads} threads against 1"
        );
    }
    let summary = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["eval"].clone()
    };
    for (threads, dir) in &runs[1..] {
        assert_eq!(
            summary(dir),
            summary(first),
            "{threads} threads' final metrics"
        );
    }
}
