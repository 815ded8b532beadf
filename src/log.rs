//! Logging: a [`Logger`] trait with a TensorBoard sink ([`TensorBoardLogger`]) and a CSV
//! sink ([`CsvLogger`], `metrics.csv`), a fan-out ([`MultiLogger`]), a progress display
//! ([`Progress`]), and a reader for TensorBoard event files ([`read_tensorboard_scalars`])
//! that checks every record's length and CRC.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value,
};

use crate::error::{Error, Result};

/// A hyperparameter's value, as TensorBoard's HParams dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// A flag.
    Bool(bool),
}

/// One logged row: the global step, the training phase, and named scalars
/// (`group/name`, e.g. `dsm/loss`, `policy/sigma_1`).
pub trait Logger {
    /// Records `scalars` at `step` in `phase`.
    fn log_scalars(&mut self, step: u64, phase: &str, scalars: &[(String, f64)]) -> Result<()>;
    /// Hands everything logged so far to the operating system.
    fn flush(&mut self) -> Result<()>;
    /// Makes everything logged so far durable (fsync); the trainer calls it before each
    /// checkpoint. Default: [`Logger::flush`].
    fn sync(&mut self) -> Result<()> {
        self.flush()
    }
    /// Rows this sink holds in all, for sinks that count them (`metrics.csv`); the trainer
    /// stores it in each checkpoint so that a resume keeps exactly the rows before it.
    fn rows_written(&self) -> Option<usize> {
        None
    }
    /// Records the run's hyperparameters for TensorBoard's HParams dashboard (a session
    /// start). Sinks that cannot show them ignore it.
    fn log_hparams(&mut self, _hparams: &[(String, HParam)]) -> Result<()> {
        Ok(())
    }
    /// Records the end of the run for the HParams dashboard (`finished`: success).
    fn log_session_end(&mut self, _finished: bool) -> Result<()> {
        Ok(())
    }
    /// Records a text (Markdown) under `tag` at `step`. Sinks that cannot show text ignore it.
    fn log_text(&mut self, _step: u64, _tag: &str, _text: &str) -> Result<()> {
        Ok(())
    }
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
    fn sync(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.sync())
    }
    fn rows_written(&self) -> Option<usize> {
        self.sinks.iter().find_map(|s| s.rows_written())
    }
    fn log_hparams(&mut self, hparams: &[(String, HParam)]) -> Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.log_hparams(hparams))
    }
    fn log_session_end(&mut self, finished: bool) -> Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.log_session_end(finished))
    }
    fn log_text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.log_text(step, tag, text))
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
    ///
    /// A last row cut short (a crash or a full disk mid-write: no final newline) is
    /// dropped with a warning; a bad row before it is an error.
    pub fn resume(path: &Path, keep_up_to_step: u64) -> Result<Self> {
        let (columns, mut rows) = read_repairing_last_row(path)?;
        rows.retain(|r| r.step <= keep_up_to_step);
        Self::reopen(path, columns, rows)
    }

    /// Reopens an existing `metrics.csv` to continue a resumed run whose checkpoint was
    /// written when the file held `keep_rows` rows: the rest were logged after it (among
    /// them rows at the checkpoint's own step, such as a final evaluation), and the
    /// resumed run logs them again. A last row cut short is dropped as in
    /// [`CsvLogger::resume`].
    ///
    /// The checkpoint is at `step`: a file with fewer than `keep_rows` rows up to it has
    /// lost rows (an error, not a silent gap).
    pub fn resume_at_row(path: &Path, keep_rows: usize, step: u64) -> Result<Self> {
        let (columns, mut rows) = read_repairing_last_row(path)?;
        let before = rows.iter().take_while(|r| r.step <= step).count();
        if before < keep_rows {
            return Err(Error::Log {
                path: path.to_path_buf(),
                message: format!(
                    "{before} rows up to step {step}, but the checkpoint there was written after row {keep_rows}: rows are missing"
                ),
            });
        }
        rows.truncate(keep_rows);
        Self::reopen(path, columns, rows)
    }

    fn reopen(path: &Path, columns: Vec<String>, rows: Vec<CsvRow>) -> Result<Self> {
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
        let mut text = self.header();
        text.push('\n');
        for row in &self.rows {
            text.push_str(&self.format_row(row));
            text.push('\n');
        }
        crate::io::write_atomic(&self.path, text.as_bytes())?;
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
        crate::io::injected_fault(&path)
            .and_then(|()| writeln!(file, "{line}"))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(path, e))
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
    fn rows_written(&self) -> Option<usize> {
        Some(self.rows.len())
    }
    fn sync(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush()
                .and_then(|_| file.get_ref().sync_data())
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// [`read_metrics_csv`], after dropping a last row cut short (a crash or a full disk
/// mid-write: no final newline) from the file, with a warning; a bad row before it is
/// an error.
fn read_repairing_last_row(path: &Path) -> Result<(Vec<String>, Vec<CsvRow>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if !text.is_empty() && !text.ends_with('\n') {
        let keep = text.rfind('\n').map_or(0, |i| i + 1);
        eprintln!(
            "warning: {}: dropped a last row cut short ({:?})",
            path.display(),
            &text[keep..text.len().min(keep + 60)]
        );
        crate::io::write_atomic(path, &text.as_bytes()[..keep])?;
    }
    read_metrics_csv(path)
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

/// A TensorBoard event-file sink: `tensorboard-rs`'s record types (its `Summary`
/// builders and the event protobufs), written by a synchronous writer in this thread, so
/// that an I/O error (a full disk) is an error the training loop returns, never a panic
/// in a writer thread. One event per row (all of its scalars), flushed per row; tags are
/// the scalar names.
pub struct TensorBoardLogger {
    dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
}

/// The largest seconds field among the event files in `dir`
/// (`events.out.tfevents.<seconds>.<host>.<pid>.<k>`), if there are any.
fn latest_event_file_seconds(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let rest = name.to_str()?.strip_prefix("events.out.tfevents.")?;
            rest.split('.').next()?.parse::<u64>().ok()
        })
        .max()
}

impl TensorBoardLogger {
    /// Starts a new event file in `dir` (created if needed), named to sort after every
    /// event file already there.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace(['/', ' '], "_"))
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        let pid = std::process::id();
        // TensorBoard reads a directory's event files in name order, and a resumed run's
        // `SessionLog` START only drops the earlier file's steps if it is read after it.
        // Two writers in one second would be ordered by their pids' digits (7301 before
        // 10002 is read after it), so the seconds field is made later than every existing
        // file's: the new file always sorts last.
        let seconds = now
            .as_secs()
            .max(latest_event_file_seconds(dir).map(|s| s + 1).unwrap_or(0));
        // The same second, host and pid can recur (two runs in one process): the last
        // field tells their files apart, and `create_new` never overwrites one.
        let mut k = 0;
        let (path, file) = loop {
            let name = format!("events.out.tfevents.{seconds:010}.{host}.{pid}.{k}");
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => k += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut logger = Self {
            dir: dir.to_path_buf(),
            path,
            file: BufWriter::new(file),
        };
        let mut version = Event::new();
        version.set_file_version("brain.Event:2".to_string());
        logger.write_event(version, None)?;
        logger.flush()?;
        Ok(logger)
    }

    /// Starts a new event file for a run resumed from a checkpoint at `step`: it begins
    /// with a `SessionLog` START at `step + 1`, which tells TensorBoard to drop what the
    /// earlier file logged after the checkpoint (the resumed run logs those steps again),
    /// so that each step shows once.
    pub fn resume(dir: &Path, step: u64) -> Result<Self> {
        let mut logger = Self::create(dir)?;
        let mut session = SessionLog::new();
        session.set_status(SessionLog_SessionStatus::START);
        session.set_msg(format!("resumed from the checkpoint at step {step}"));
        let mut event = Event::new();
        event.set_session_log(session);
        logger.write_event(event, Some(step + 1))?;
        logger.flush()?;
        Ok(logger)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, mut event: Event, step: Option<u64>) -> Result<()> {
        use protobuf::Message;
        let wall_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        event.set_wall_time(wall_time);
        if let Some(step) = step {
            event.set_step(step as i64);
        }
        let payload = event.write_to_bytes().map_err(|e| Error::Log {
            path: self.path.clone(),
            message: format!("encoding an event: {e}"),
        })?;
        let length = (payload.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(payload.len() + 16);
        record.extend_from_slice(&length);
        record.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
        record.extend_from_slice(&payload);
        record.extend_from_slice(&masked_crc32c(&payload).to_le_bytes());
        crate::io::injected_fault(&self.path)
            .and_then(|()| self.file.write_all(&record))
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A summary value of a TensorBoard plugin (`plugin_name`) with its content bytes.
fn plugin_value(tag: &str, plugin_name: &str, content: Vec<u8>) -> Summary_Value {
    let mut plugin = SummaryMetadata_PluginData::new();
    plugin.set_plugin_name(plugin_name.to_string());
    plugin.set_content(content);
    let mut metadata = SummaryMetadata::new();
    metadata.set_plugin_data(plugin);
    let mut value = Summary_Value::new();
    value.set_tag(tag.to_string());
    value.set_metadata(metadata);
    value
}

impl TensorBoardLogger {
    /// An HParams plugin record: an empty tensor whose metadata carries the data.
    fn write_hparams_data(
        &mut self,
        tag: &str,
        data: &protobuf::ProtobufResult<Vec<u8>>,
    ) -> Result<()> {
        let content = data.as_ref().map_err(|e| Error::Log {
            path: self.path.clone(),
            message: format!("encoding {tag}: {e}"),
        })?;
        let mut tensor = tensorboard_proto::tensor::TensorProto::new();
        tensor.set_dtype(tensorboard_proto::types::DataType::DT_FLOAT);
        let mut value = plugin_value(tag, "hparams", content.clone());
        value.set_tensor(tensor);
        let mut summary = Summary::new();
        summary.mut_value().push(value);
        let mut event = Event::new();
        event.set_summary(summary);
        self.write_event(event, Some(0))?;
        self.flush()
    }
}

impl Logger for TensorBoardLogger {
    fn log_scalars(&mut self, step: u64, _phase: &str, scalars: &[(String, f64)]) -> Result<()> {
        let mut summary = Summary::new();
        for (name, value) in scalars {
            let one = tensorboard_rs::summary::scalar(name, *value as f32);
            summary.mut_value().extend(one.get_value().iter().cloned());
        }
        let mut event = Event::new();
        event.set_summary(summary);
        self.write_event(event, Some(step))?;
        self.flush()
    }
    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))
    }
    fn log_hparams(&mut self, hparams: &[(String, HParam)]) -> Result<()> {
        use protobuf::well_known_types::Value;
        use protobuf::Message;
        use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionStartInfo};
        let mut start = SessionStartInfo::new();
        for (name, value) in hparams {
            let mut v = Value::new();
            match value {
                HParam::Number(x) => v.set_number_value(*x),
                HParam::Text(t) => v.set_string_value(t.clone()),
                HParam::Bool(b) => v.set_bool_value(*b),
            }
            start.mut_hparams().insert(name.clone(), v);
        }
        start.set_start_time_secs(wall_time());
        let mut data = HParamsPluginData::new();
        data.set_version(0);
        data.set_session_start_info(start);
        self.write_hparams_data("_hparams_/session_start_info", &data.write_to_bytes())
    }
    fn log_session_end(&mut self, finished: bool) -> Result<()> {
        use protobuf::Message;
        use tensorboard_proto::api::Status;
        use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo};
        let mut end = SessionEndInfo::new();
        end.set_status(if finished {
            Status::STATUS_SUCCESS
        } else {
            Status::STATUS_FAILURE
        });
        end.set_end_time_secs(wall_time());
        let mut data = HParamsPluginData::new();
        data.set_version(0);
        data.set_session_end_info(end);
        self.write_hparams_data("_hparams_/session_end_info", &data.write_to_bytes())
    }
    fn log_text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        use tensorboard_proto::tensor::TensorProto;
        use tensorboard_proto::types::DataType;
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.mut_string_val().push(text.as_bytes().to_vec());
        let mut value = plugin_value(tag, "text", Vec::new());
        value.set_tensor(tensor);
        let mut summary = Summary::new();
        summary.mut_value().push(value);
        let mut event = Event::new();
        event.set_summary(summary);
        self.write_event(event, Some(step))?;
        self.flush()
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
        let mut event = Event::new();
        event.set_summary(tensorboard_rs::summary::image(tag, rgb, &[3, size, size]));
        self.write_event(event, Some(step))?;
        self.flush()
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

/// Reads every scalar in a TensorBoard event file (see [`read_tensorboard_events`]).
pub fn read_tensorboard_scalars(path: &Path) -> Result<Vec<TensorBoardScalar>> {
    let mut scalars = Vec::new();
    for event in read_tensorboard_events(path)? {
        if event.has_summary() {
            for value in event.get_summary().get_value() {
                if value.has_simple_value() {
                    scalars.push(TensorBoardScalar {
                        tag: value.get_tag().to_string(),
                        step: event.get_step(),
                        value: value.get_simple_value(),
                    });
                }
            }
        }
    }
    Ok(scalars)
}

/// Reads every event of a TensorBoard event file, checking each record's framing: the
/// 8-byte length, its masked CRC-32C, the payload, and the payload's masked CRC-32C.
pub fn read_tensorboard_events(path: &Path) -> Result<Vec<Event>> {
    use protobuf::Message;
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let corrupt = |offset: usize, what: &str| Error::Log {
        path: path.to_path_buf(),
        message: format!("record at byte {offset}: {what}"),
    };
    let mut events = Vec::new();
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
        if length > bytes.len() || bytes.len() < start + length + 4 {
            return Err(corrupt(offset, "truncated payload"));
        }
        let payload = &bytes[start..start + length];
        crc.copy_from_slice(&bytes[start + length..start + length + 4]);
        if u32::from_le_bytes(crc) != masked_crc32c(payload) {
            return Err(corrupt(offset, "payload CRC mismatch"));
        }
        let event = Event::parse_from_bytes(payload)
            .map_err(|e| corrupt(offset, &format!("not an Event: {e}")))?;
        events.push(event);
        offset = start + length + 4;
    }
    Ok(events)
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
