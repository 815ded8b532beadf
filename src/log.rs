//! Logging: a [`Logger`] trait with a TensorBoard sink ([`TensorBoardLogger`]) and a CSV
//! sink ([`CsvLogger`], `metrics.csv`), a fan-out ([`MultiLogger`]), a progress display
//! ([`Progress`]), and a reader for TensorBoard event files ([`read_tensorboard_scalars`])
//! that checks every record's length and CRC.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};

/// One logged row: the global step, the training phase, and named scalars
/// (`group/name`, e.g. `dsm/loss`, `policy/sigma_1`).
pub trait Logger {
    /// Records `scalars` at `step` in `phase`.
    fn log_scalars(&mut self, step: u64, phase: &str, scalars: &[(String, f64)]) -> Result<()>;
    /// Makes everything logged so far durable.
    fn flush(&mut self) -> Result<()>;
    /// Records a square RGB8 image (`size × size × 3`, row-major, interleaved) at `step`.
    /// Sinks that cannot show images ignore it.
    fn log_image(&mut self, _step: u64, _tag: &str, _rgb: &[u8], _size: usize) -> Result<()> {
        Ok(())
    }
}

/// Sends every row to several loggers.
#[derive(Default)]
pub struct MultiLogger {
    sinks: Vec<Box<dyn Logger>>,
}

impl MultiLogger {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a sink.
    pub fn push(&mut self, sink: Box<dyn Logger>) {
        self.sinks.push(sink);
    }
}

impl Logger for MultiLogger {
    fn log_scalars(&mut self, step: u64, phase: &str, scalars: &[(String, f64)]) -> Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.log_scalars(step, phase, scalars))
    }
    fn flush(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }
    fn log_image(&mut self, step: u64, tag: &str, rgb: &[u8], size: usize) -> Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.log_image(step, tag, rgb, size))
    }
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    /// The global step.
    pub step: u64,
    /// The phase (`pretrain`, `finetune`, ...).
    pub phase: String,
    /// Scalars by column name.
    pub values: BTreeMap<String, f64>,
}

/// `metrics.csv`: first column `step`, then `phase`, then one column per scalar in the
/// order they first appeared. A scalar that first appears later still gets a column: the
/// file is rewritten (atomically) with the wider header. Each row is flushed to the OS as
/// soon as it is logged, so a killed run keeps every row it wrote.
pub struct CsvLogger {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<CsvRow>,
    file: Option<BufWriter<File>>,
}

impl CsvLogger {
    /// Starts a new, empty `metrics.csv` at `path` (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let mut logger = Self {
            path: path.to_path_buf(),
            columns: Vec::new(),
            rows: Vec::new(),
            file: None,
        };
        logger.rewrite()?;
        Ok(logger)
    }

    /// Reopens an existing `metrics.csv` to continue a resumed run: rows with a step
    /// greater than `keep_up_to_step` (logged after the checkpoint being resumed from) are
    /// dropped, since the resumed run logs them again.
    pub fn resume(path: &Path, keep_up_to_step: u64) -> Result<Self> {
        let (columns, mut rows) = read_metrics_csv(path)?;
        rows.retain(|r| r.step <= keep_up_to_step);
        let mut logger = Self {
            path: path.to_path_buf(),
            columns,
            rows,
            file: None,
        };
        logger.rewrite()?;
        Ok(logger)
    }

    /// The rows logged so far.
    pub fn rows(&self) -> &[CsvRow] {
        &self.rows
    }

    fn header(&self) -> String {
        let mut cells = vec!["step".to_string(), "phase".to_string()];
        cells.extend(self.columns.iter().cloned());
        cells.join(",")
    }

    fn format_row(&self, row: &CsvRow) -> String {
        let mut cells = vec![row.step.to_string(), row.phase.clone()];
        cells.extend(self.columns.iter().map(|c| {
            row.values
                .get(c)
                .map_or_else(String::new, |v| v.to_string())
        }));
        cells.join(",")
    }

    fn rewrite(&mut self) -> Result<()> {
        let temporary = self.path.with_extension("csv.tmp");
        let mut text = self.header();
        text.push('\n');
        for row in &self.rows {
            text.push_str(&self.format_row(row));
            text.push('\n');
        }
        std::fs::write(&temporary, text).map_err(|e| Error::io(&temporary, e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| Error::io(&self.path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file = Some(BufWriter::new(file));
        Ok(())
    }
}

impl Logger for CsvLogger {
    fn log_scalars(&mut self, step: u64, phase: &str, scalars: &[(String, f64)]) -> Result<()> {
        let mut widened = false;
        for (name, _) in scalars {
            if !self.columns.contains(name) {
                self.columns.push(name.clone());
                widened = true;
            }
        }
        let row = CsvRow {
            step,
            phase: phase.to_string(),
            values: scalars.iter().cloned().collect(),
        };
        self.rows.push(row);
        if widened {
            return self.rewrite();
        }
        let line = self.format_row(&self.rows[self.rows.len() - 1]);
        let path = self.path.clone();
        let file = self.file.as_mut().ok_or_else(|| Error::Log {
            path: path.clone(),
            message: "not open".into(),
        })?;
        writeln!(file, "{line}")
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(path, e))
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Reads a `metrics.csv` written by [`CsvLogger`]: the scalar column names and the rows.
pub fn read_metrics_csv(path: &Path) -> Result<(Vec<String>, Vec<CsvRow>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    if header.len() < 2 || header[0] != "step" || header[1] != "phase" {
        return Err(Error::Log {
            path: path.to_path_buf(),
            message: "line 1: expected a header starting with `step,phase`".into(),
        });
    }
    let columns: Vec<String> = header[2..].iter().map(|s| s.to_string()).collect();
    let mut rows = Vec::new();
    for (index, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| Error::Log {
            path: path.to_path_buf(),
            message: format!("line {}: {what}", index + 2),
        };
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            return Err(bad(&format!(
                "{} cells, expected {}",
                cells.len(),
                header.len()
            )));
        }
        let step = cells[0]
            .parse()
            .map_err(|_| bad(&format!("step {:?} is not an integer", cells[0])))?;
        let mut values = BTreeMap::new();
        for (name, cell) in columns.iter().zip(&cells[2..]) {
            if cell.is_empty() {
                continue;
            }
            let value = cell
                .parse()
                .map_err(|_| bad(&format!("{name} = {cell:?} is not a number")))?;
            values.insert(name.clone(), value);
        }
        rows.push(CsvRow {
            step,
            phase: cells[1].to_string(),
            values,
        });
    }
    Ok((columns, rows))
}

/// A TensorBoard event-file sink (`tensorboard-rs`). Tags are the scalar names.
pub struct TensorBoardLogger {
    dir: PathBuf,
    writer: Option<tensorboard_rs::summary_writer::SummaryWriter>,
}

impl TensorBoardLogger {
    /// Opens a new event file in `dir`. The directory is checked for writability first,
    /// because `tensorboard-rs` panics on I/O errors in its writer thread.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
        std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
        // Event files are named by the second (and pid) they were created in: a second
        // writer from this process within the same second would overwrite the first.
        while event_file_exists_for_this_second(dir)? {
            std::thread::sleep(Duration::from_millis(50));
        }
        let writer = tensorboard_rs::summary_writer::SummaryWriter::new(dir);
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Some(writer),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn event_file_exists_for_this_second(dir: &Path) -> Result<bool> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = format!("events.out.tfevents.{now:010}.");
    let suffix = format!(".{}.0", std::process::id());
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().to_string();
        name.starts_with(&prefix) && name.ends_with(&suffix)
    }))
}

impl Logger for TensorBoardLogger {
    fn log_scalars(&mut self, step: u64, _phase: &str, scalars: &[(String, f64)]) -> Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            for (name, value) in scalars {
                writer.add_scalar(name, *value as f32, step as usize);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            writer.flush();
        }
        Ok(())
    }
    fn log_image(&mut self, step: u64, tag: &str, rgb: &[u8], size: usize) -> Result<()> {
        // tensorboard-rs panics on a length mismatch (and reads width and height in an
        // unusual order, harmless for the square images accepted here).
        if rgb.len() != size * size * 3 {
            return Err(Error::Log {
                path: self.dir.clone(),
                message: format!(
                    "image `{tag}`: {} bytes for a {size}×{size} RGB image",
                    rgb.len()
                ),
            });
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.add_image(tag, rgb, &[3, size, size], step as usize);
        }
        Ok(())
    }
}

impl Drop for TensorBoardLogger {
    fn drop(&mut self) {
        // Dropping the writer joins its thread, which writes out every queued event.
        if let Some(mut writer) = self.writer.take() {
            writer.flush();
        }
    }
}

/// A scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBoardScalar {
    /// The tag.
    pub tag: String,
    /// The step.
    pub step: i64,
    /// The value.
    pub value: f32,
}

fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads every scalar in a TensorBoard event file, checking each record's framing: the
/// 8-byte length, its masked CRC-32C, the payload, and the payload's masked CRC-32C.
pub fn read_tensorboard_scalars(path: &Path) -> Result<Vec<TensorBoardScalar>> {
    use protobuf::Message;
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let corrupt = |offset: usize, what: &str| Error::Log {
        path: path.to_path_buf(),
        message: format!("record at byte {offset}: {what}"),
    };
    let mut scalars = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        if bytes.len() - offset < 12 {
            return Err(corrupt(offset, "truncated header"));
        }
        let length_bytes = &bytes[offset..offset + 8];
        let mut le = [0u8; 8];
        le.copy_from_slice(length_bytes);
        let length = u64::from_le_bytes(le) as usize;
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[offset + 8..offset + 12]);
        if u32::from_le_bytes(crc) != masked_crc32c(length_bytes) {
            return Err(corrupt(offset, "length CRC mismatch"));
        }
        let start = offset + 12;
        if bytes.len() < start + length + 4 {
            return Err(corrupt(offset, "truncated payload"));
        }
        let payload = &bytes[start..start + length];
        crc.copy_from_slice(&bytes[start + length..start + length + 4]);
        if u32::from_le_bytes(crc) != masked_crc32c(payload) {
            return Err(corrupt(offset, "payload CRC mismatch"));
        }
        let event = tensorboard_proto::event::Event::parse_from_bytes(payload)
            .map_err(|e| corrupt(offset, &format!("not an Event: {e}")))?;
        if event.has_summary() {
            for value in event.get_summary().get_value() {
                scalars.push(TensorBoardScalar {
                    tag: value.get_tag().to_string(),
                    step: event.get_step(),
                    value: value.get_simple_value(),
                });
            }
        }
        offset = start + length + 4;
    }
    Ok(scalars)
}

/// Progress of a long loop: an `indicatif` bar on a terminal (iteration, loss, it/s);
/// plain lines on stderr every few seconds otherwise (CI logs, `nohup`).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    label: String,
    started: Instant,
    last_line: Instant,
    start_position: u64,
}

impl Progress {
    /// A progress display for `total` iterations starting at `position`.
    pub fn new(label: &str, total: u64, position: u64, quiet: bool) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.set_position(position);
            Some(bar)
        } else {
            None
        };
        let now = Instant::now();
        Self {
            bar,
            total,
            label: if quiet {
                String::new()
            } else {
                label.to_string()
            },
            started: now,
            last_line: now,
            start_position: position,
        }
    }

    /// Reports that `position` iterations are done, with a short status message.
    pub fn update(&mut self, position: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message.to_string());
            return;
        }
        if self.label.is_empty() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_line) >= Duration::from_secs(5) || position == self.total {
            self.last_line = now;
            let elapsed = now.duration_since(self.started).as_secs_f64().max(1e-9);
            let rate = (position - self.start_position) as f64 / elapsed;
            eprintln!(
                "{} {position}/{} ({rate:.0} it/s) {message}",
                self.label, self.total
            );
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
