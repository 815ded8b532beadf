//! Checkpoints: named f32 tensors plus string metadata in one `safetensors` file, written
//! atomically (a temporary file renamed into place) so a run killed mid-write keeps its
//! previous checkpoint intact.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use dfdx::prelude::*;

use crate::error::{Error, Result};
use crate::nn::Parameterized;
use crate::tensor::{Backend, Matrix};

/// The metadata key of a checkpoint's CRC-32C ([`Checkpoint::checksum`]).
pub const CHECKSUM_KEY: &str = "checksum.crc32c";

/// A host-side tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// The contents of a checkpoint file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors by name (e.g. `policy.eps_net.layers.0.weight`, `policy_optim.moment1.3`).
    pub tensors: BTreeMap<String, HostTensor>,
    /// Strings by key (iteration, RNG state as JSON, running statistics, ...).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores one matrix under `name`.
    pub fn put_matrix<D: Backend>(&mut self, name: impl Into<String>, m: &Matrix<D>) {
        let (rows, cols) = *m.shape();
        self.tensors.insert(
            name.into(),
            HostTensor {
                shape: vec![rows, cols],
                data: m.as_vec(),
            },
        );
    }

    /// Stores a list of matrices as `prefix.name`.
    pub fn put_matrices<D: Backend>(&mut self, prefix: &str, names: &[String], ms: &[&Matrix<D>]) {
        for (name, m) in names.iter().zip(ms) {
            self.put_matrix(format!("{prefix}.{name}"), m);
        }
    }

    /// Stores every parameter of `model` under `prefix`.
    pub fn put_model<D: Backend, M: Parameterized<D>>(&mut self, prefix: &str, model: &M) {
        self.put_matrices(prefix, &model.parameter_names(), &model.parameters());
    }

    /// Copies the tensor `name` into `m`, checking its shape. `path` is only for messages.
    pub fn load_matrix<D: Backend>(
        &self,
        path: &Path,
        name: &str,
        m: &mut Matrix<D>,
    ) -> Result<()> {
        let stored = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::checkpoint(path, format!("has no tensor `{name}`")))?;
        let (rows, cols) = *m.shape();
        if stored.shape != [rows, cols] {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, the model expects [{rows}, {cols}] \
                     (was the run made with another dimension, width or T?)",
                    stored.shape
                ),
            ));
        }
        m.copy_from(&stored.data);
        Ok(())
    }

    /// Loads a list of matrices stored with [`Checkpoint::put_matrices`].
    pub fn load_matrices<D: Backend>(
        &self,
        path: &Path,
        prefix: &str,
        names: &[String],
        ms: Vec<&mut Matrix<D>>,
    ) -> Result<()> {
        for (name, m) in names.iter().zip(ms) {
            self.load_matrix(path, &format!("{prefix}.{name}"), m)?;
        }
        Ok(())
    }

    /// Loads every parameter of `model` from `prefix`.
    pub fn load_model<D: Backend, M: Parameterized<D>>(
        &self,
        path: &Path,
        prefix: &str,
        model: &mut M,
    ) -> Result<()> {
        let names = model.parameter_names();
        self.load_matrices(path, prefix, &names, model.parameters_mut())
    }

    /// A metadata string; an error naming the key when it is absent.
    pub fn meta(&self, path: &Path, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::checkpoint(path, format!("has no metadata `{key}`")))
    }

    /// A metadata value parsed from its string form.
    pub fn meta_parse<T: std::str::FromStr>(&self, path: &Path, key: &str) -> Result<T> {
        let raw = self.meta(path, key)?;
        raw.parse().map_err(|_| {
            Error::checkpoint(path, format!("metadata `{key}` = {raw:?} is malformed"))
        })
    }

    /// Writes the checkpoint atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), raw, t.shape.clone())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, raw, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), raw)
                    .map(|view| (name.clone(), view))
                    .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert(CHECKSUM_KEY.to_string(), format!("{:08x}", self.checksum()));
        let buffer = ::safetensors::tensor::serialize(views, &Some(metadata))
            .map_err(|e| Error::checkpoint(path, format!("serialise: {e:?}")))?;
        crate::io::write_atomic(path, &buffer)
    }

    /// CRC-32C over every tensor (name, shape, values) and every metadata entry except
    /// the checksum itself, in name order: what [`Checkpoint::save`] stores under
    /// [`CHECKSUM_KEY`] and [`Checkpoint::load`] verifies.
    pub fn checksum(&self) -> u32 {
        let mut crc = 0u32;
        for (name, tensor) in &self.tensors {
            crc = crc32c::crc32c_append(crc, name.as_bytes());
            for dim in &tensor.shape {
                crc = crc32c::crc32c_append(crc, &(*dim as u64).to_le_bytes());
            }
            let bytes: Vec<u8> = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            crc = crc32c::crc32c_append(crc, &bytes);
        }
        for (key, value) in self.metadata.iter().filter(|(k, _)| *k != CHECKSUM_KEY) {
            crc = crc32c::crc32c_append(crc, key.as_bytes());
            crc = crc32c::crc32c_append(crc, &[0]);
            crc = crc32c::crc32c_append(crc, value.as_bytes());
            crc = crc32c::crc32c_append(crc, &[0]);
        }
        crc
    }

    /// Reads a checkpoint written by [`Checkpoint::save`] and verifies its checksum: a
    /// damaged file is an error, never numbers. A checkpoint written before checksums
    /// existed loads with a warning on stderr.
    pub fn load(path: &Path) -> Result<Self> {
        let mut checkpoint = Self::load_unverified(path)?;
        match checkpoint.metadata.remove(CHECKSUM_KEY) {
            Some(stored) => {
                let computed = format!("{:08x}", checkpoint.checksum());
                if stored != computed {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "checksum mismatch (stored {stored}, computed {computed}): the file is damaged"
                        ),
                    ));
                }
            }
            None => {
                // A flipped bit in the key's name must not pass for a checkpoint written
                // before checksums: a key a few bits away from it is a damaged one.
                let near = checkpoint.metadata.keys().find(|key| {
                    key.len() == CHECKSUM_KEY.len()
                        && key
                            .bytes()
                            .zip(CHECKSUM_KEY.bytes())
                            .map(|(a, b)| (a ^ b).count_ones())
                            .sum::<u32>()
                            <= 8
                });
                if let Some(key) = near {
                    return Err(Error::checkpoint(
                        path,
                        format!("the checksum's key reads {key:?}: the file is damaged"),
                    ));
                }
                eprintln!(
                    "warning: checkpoint {} has no checksum (written before checksums); loaded unverified",
                    path.display()
                );
            }
        }
        Ok(checkpoint)
    }

    /// Reads a checkpoint without verifying its checksum (which stays in the metadata).
    pub fn load_unverified(path: &Path) -> Result<Self> {
        let buffer = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let parsed = SafeTensors::deserialize(&buffer)
            .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e:?}")))?;
        let (_, header) = SafeTensors::read_metadata(&buffer)
            .map_err(|e| Error::checkpoint(path, format!("bad header: {e:?}")))?;
        let mut checkpoint = Checkpoint::new();
        if let Some(metadata) = header.metadata() {
            checkpoint.metadata = metadata.clone().into_iter().collect();
        }
        for (name, view) in parsed.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::checkpoint(
                    path,
                    format!("tensor `{name}` is not f32"),
                ));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = view.shape().to_vec();
            checkpoint.tensors.insert(name, HostTensor { shape, data });
        }
        Ok(checkpoint)
    }
}
