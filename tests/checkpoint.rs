//! Checkpoint round trips and errors.

use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::nn::{Activation, Mlp, Parameterized};
use denoise_gym::rng::{rng_from_json, rng_to_json, seeded};
use dfdx::prelude::*;
use rand::Rng;

#[test]
fn a_model_and_an_rng_survive_a_round_trip() {
    let dev = Cpu::default();
    let model = Mlp::new(&dev, 3, 8, 2, 1, Activation::Silu, &mut seeded(1, 0));
    let mut rng = seeded(9, 2);
    let _: f64 = rng.gen();
    let mut c = Checkpoint::new();
    c.put_model("net", &model);
    c.metadata.insert("rng".into(), rng_to_json(&rng).unwrap());
    c.metadata.insert("iteration".into(), "17".into());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    c.save(&path).unwrap();

    let loaded = Checkpoint::load(&path).unwrap();
    let mut other = Mlp::new(&dev, 3, 8, 2, 1, Activation::Silu, &mut seeded(2, 0));
    assert_ne!(
        other.parameters()[0].as_vec(),
        model.parameters()[0].as_vec()
    );
    loaded.load_model(&path, "net", &mut other).unwrap();
    for (a, b) in model.parameters().iter().zip(other.parameters()) {
        assert_eq!(a.as_vec(), b.as_vec());
    }
    let mut restored = rng_from_json(loaded.meta(&path, "rng").unwrap()).unwrap();
    assert_eq!(restored.gen::<u64>(), rng.gen::<u64>());
    assert_eq!(loaded.meta_parse::<u64>(&path, "iteration").unwrap(), 17);
}

#[test]
fn shape_mismatch_missing_tensor_and_garbage_files_are_errors() {
    let dev = Cpu::default();
    let model = Mlp::new(&dev, 3, 8, 1, 1, Activation::Relu, &mut seeded(1, 0));
    let mut c = Checkpoint::new();
    c.put_model("net", &model);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    c.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();

    let mut wider = Mlp::new(&dev, 3, 16, 1, 1, Activation::Relu, &mut seeded(1, 0));
    let err = loaded
        .load_model(&path, "net", &mut wider)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shape") && err.contains("c.safetensors"),
        "{err}"
    );
    let err = loaded
        .load_model(&path, "missing", &mut wider)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.layers.0.weight"), "{err}");
    assert!(loaded.meta(&path, "rng").is_err());

    let garbage = dir.path().join("g.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    assert!(Checkpoint::load(&garbage).is_err());
    assert!(Checkpoint::load(&dir.path().join("absent.safetensors")).is_err());
}

fn small_checkpoint() -> Checkpoint {
    let dev = Cpu::default();
    let mlp = Mlp::new(&dev, 3, 8, 2, 1, Activation::Silu, &mut seeded(1, 0));
    let mut c = Checkpoint::new();
    c.put_model("net", &mlp);
    c.metadata.insert("iteration".into(), "12".into());
    c
}

#[test]
fn every_flipped_byte_of_tensor_data_or_metadata_is_caught_by_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let c = small_checkpoint();
    c.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(
        loaded, c,
        "the checksum key is not part of the loaded metadata"
    );
    let good = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // Every byte of the tensor data, and the metadata's value of `iteration`.
    let mut flipped = 0;
    let iteration_at = good
        .windows(4)
        .position(|w| w == b"\"12\"")
        .expect("metadata in the header")
        + 1;
    for at in (8 + header..good.len()).chain([iteration_at]) {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "byte {at}: {err}");
        flipped += 1;
    }
    assert!(flipped > 100);
}

#[test]
fn a_checkpoint_without_a_checksum_loads_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let c = small_checkpoint();
    c.save(&path).unwrap();
    // What a build before checksums wrote: the same file without the key.
    let mut old = Checkpoint::load_unverified(&path).unwrap();
    assert!(old
        .metadata
        .remove(denoise_gym::checkpoint::CHECKSUM_KEY)
        .is_some());
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = old
        .tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, raw, shape)| {
            (
                n.clone(),
                ::safetensors::tensor::TensorView::new(
                    ::safetensors::tensor::Dtype::F32,
                    shape.clone(),
                    raw,
                )
                .unwrap(),
            )
        })
        .collect();
    let meta: std::collections::HashMap<String, String> =
        old.metadata.clone().into_iter().collect();
    std::fs::write(
        &path,
        ::safetensors::tensor::serialize(views, &Some(meta)).unwrap(),
    )
    .unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), c);
}
