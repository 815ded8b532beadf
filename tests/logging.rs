//! TensorBoard and CSV sinks.

use denoise_gym::log::{
    read_metrics_csv, read_tensorboard_scalars, CsvLogger, Logger, TensorBoardLogger,
};

fn event_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn tensorboard_records_read_back_with_valid_crcs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut tb = TensorBoardLogger::create(dir.path()).unwrap();
        for step in 1..=20u64 {
            let scalars = vec![
                ("dsm/loss".to_string(), 1.0 / step as f64),
                ("policy/sigma_1".to_string(), 0.69),
            ];
            tb.log_scalars(step, "pretrain", &scalars).unwrap();
        }
        // Dropping the logger must put every event on disk.
    }
    let files = event_files(dir.path());
    assert_eq!(files.len(), 1);
    let scalars = read_tensorboard_scalars(&files[0]).unwrap();
    let losses: Vec<_> = scalars.iter().filter(|s| s.tag == "dsm/loss").collect();
    assert_eq!(losses.len(), 20);
    for (k, s) in losses.iter().enumerate() {
        assert_eq!(s.step, k as i64 + 1);
        assert_eq!(s.value, (1.0 / (k + 1) as f64) as f32);
    }
    assert_eq!(
        scalars.iter().filter(|s| s.tag == "policy/sigma_1").count(),
        20
    );

    // A flipped byte in the payload must be caught by the CRC check.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let err = read_tensorboard_scalars(&files[0]).unwrap_err().to_string();
    assert!(err.contains("CRC"), "{err}");
}

#[test]
fn two_writers_in_one_second_do_not_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2u64 {
        let mut tb = TensorBoardLogger::create(dir.path()).unwrap();
        tb.log_scalars(round, "p", &[("x".to_string(), round as f64)])
            .unwrap();
    }
    let files = event_files(dir.path());
    assert_eq!(files.len(), 2);
    let total: usize = files
        .iter()
        .map(|f| read_tensorboard_scalars(f).unwrap().len())
        .sum();
    assert_eq!(total, 2);
}

#[test]
fn csv_gets_a_column_for_a_scalar_that_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let mut csv = CsvLogger::create(&path).unwrap();
    csv.log_scalars(1, "pretrain", &[("dsm/loss".into(), 2.0)])
        .unwrap();
    csv.log_scalars(2, "pretrain", &[("dsm/loss".into(), 1.5)])
        .unwrap();
    csv.log_scalars(
        3,
        "finetune",
        &[("dsm/loss".into(), 1.0), ("ebm/energy_pos".into(), -0.5)],
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "step,phase,dsm/loss,ebm/energy_pos");
    assert_eq!(lines[1], "1,pretrain,2,");
    assert_eq!(lines[3], "3,finetune,1,-0.5");
    let (columns, rows) = read_metrics_csv(&path).unwrap();
    assert_eq!(columns, vec!["dsm/loss", "ebm/energy_pos"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].values["ebm/energy_pos"], -0.5);
}

#[test]
fn csv_resume_drops_rows_after_the_checkpoint_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let mut csv = CsvLogger::create(&path).unwrap();
    for step in 1..=5 {
        csv.log_scalars(step, "pretrain", &[("a".into(), step as f64)])
            .unwrap();
    }
    drop(csv);
    let mut resumed = CsvLogger::resume(&path, 3).unwrap();
    resumed
        .log_scalars(4, "pretrain", &[("a".into(), 40.0)])
        .unwrap();
    let (_, rows) = read_metrics_csv(&path).unwrap();
    let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert_eq!(rows[3].values["a"], 40.0);
}

#[test]
fn a_malformed_metrics_file_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    std::fs::write(&path, "step,phase,a\n1,p,2\nx,p,3\n").unwrap();
    let err = read_metrics_csv(&path).unwrap_err().to_string();
    assert!(
        err.contains("metrics.csv") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn a_new_event_file_sorts_after_every_earlier_one_even_within_one_second() {
    // TensorBoard reads event files in name order; a resumed run's file must come last so
    // that its SessionLog START drops the earlier file's steps after the checkpoint.
    let dir = tempfile::tempdir().unwrap();
    // An earlier writer's file from "the future" and one whose pid has more digits.
    let later = "events.out.tfevents.4000000000.host.99999.0";
    std::fs::write(dir.path().join(later), b"").unwrap();
    std::fs::write(
        dir.path()
            .join("events.out.tfevents.0000000005.host.123456.0"),
        b"",
    )
    .unwrap();
    let mut names = Vec::new();
    for resume in [false, true, true] {
        let logger = if resume {
            TensorBoardLogger::resume(dir.path(), 10).unwrap()
        } else {
            TensorBoardLogger::create(dir.path()).unwrap()
        };
        names.push(
            logger
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string(),
        );
    }
    let mut all: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    all.sort();
    assert_eq!(&all[all.len() - 3..], &names[..], "{all:?}");
    assert!(
        names[0].starts_with("events.out.tfevents.4000000001."),
        "{names:?}"
    );
}
