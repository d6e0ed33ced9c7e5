//! `.pth` archives whose tensors are views: storage offsets, column-major strides and names
//! that alias one storage (`tests/data/views.pth`, written by `tools/checkpoint_fixtures.py`;
//! every value an `arange`, so the expected tensors are closed forms), and reading part of a
//! checkpoint.

mod common;

use candle_core::{DType, Device, Tensor};
use common::data;
use mrsampler_models::Checkpoint;

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Whether two tensors are views of one buffer.
fn same_storage(a: &Tensor, b: &Tensor) -> bool {
    let (sa, _) = a.storage_and_layout();
    let (sb, _) = b.storage_and_layout();
    std::ptr::eq(&*sa, &*sb)
}

#[test]
fn views_are_read_with_their_offsets_and_strides() {
    let ckpt = Checkpoint::load(data("views.pth")).unwrap();
    let base = ckpt.get("base").unwrap();
    assert_eq!(base.dims(), [24]);
    assert_eq!(values(base), (0..24).map(f64::from).collect::<Vec<_>>());
    let slice = ckpt.get("slice").unwrap();
    assert_eq!(slice.dims(), [3, 4]);
    assert_eq!(values(slice), (5..17).map(f64::from).collect::<Vec<_>>());
    assert_eq!(values(ckpt.get("alias").unwrap()), values(slice));
    // arange(12) as [3, 4], transposed: row r of the [4, 3] result is column r.
    let t = ckpt.get("transposed").unwrap();
    assert_eq!(t.dims(), [4, 3]);
    let expected: Vec<f64> = (0..4)
        .flat_map(|r| (0..3).map(move |c| f64::from(c * 4 + r)))
        .collect();
    assert_eq!(values(t), expected);
    let double = ckpt.get("double").unwrap();
    assert_eq!(double.dtype(), DType::F64);
    assert_eq!(values(double), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn names_of_one_storage_share_one_buffer() {
    let ckpt = Checkpoint::load(data("views.pth")).unwrap();
    let base = ckpt.get("base").unwrap();
    assert!(same_storage(base, ckpt.get("slice").unwrap()));
    assert!(same_storage(base, ckpt.get("alias").unwrap()));
    assert!(!same_storage(base, ckpt.get("transposed").unwrap()));
    // A copy on the host does not share (the check can fail).
    let copy = Tensor::from_vec(values(base), 24, &Device::Cpu).unwrap();
    assert!(!same_storage(base, &copy));
}

#[test]
fn load_matching_reads_only_the_tensors_asked_for() {
    let ckpt =
        Checkpoint::load_matching(data("views.pth"), |n| n == "base" || n == "double").unwrap();
    let names: Vec<&str> = ckpt.names().collect();
    assert_eq!(names, ["base", "double"]);
    assert_eq!(values(ckpt.get("double").unwrap()).len(), 6);
    let none = Checkpoint::load_matching(data("views.pth"), |_| false).unwrap();
    assert!(none.is_empty());
    // Safetensors files are filtered the same way.
    let st = Checkpoint::load_matching(data("unet_nf4_d2.safetensors"), |n| {
        n.starts_with("init_conv.")
    })
    .unwrap();
    assert!(!st.is_empty() && st.names().all(|n| n.starts_with("init_conv.")));
}

/// DA-CLIP's training checkpoint wraps its state dict, prefixes every name with `module.` and
/// stores the main tower twice (`visual.*` aliases `clip.visual.*`): the filter sees the
/// normalised names, and the aliases share their buffers.
#[test]
fn a_training_checkpoint_is_filtered_by_normalised_names() {
    let path = data("daclip/daclip_vit_w128_l2.pt");
    let full = Checkpoint::load(&path).unwrap();
    let part = Checkpoint::load_matching(&path, |n| n.starts_with("visual.")).unwrap();
    assert!(!part.is_empty());
    assert_eq!(
        part.names().collect::<Vec<_>>(),
        full.names()
            .filter(|n| n.starts_with("visual."))
            .collect::<Vec<_>>()
    );
    assert!(part.len() < full.len());
    let name = "visual.conv1.weight";
    assert_eq!(
        values(part.get(name).unwrap()),
        values(full.get(name).unwrap())
    );
    assert!(same_storage(
        full.get(name).unwrap(),
        full.get("clip.visual.conv1.weight").unwrap()
    ));
}

/// A storage whose directory entry claims more bytes than the file has is refused with an
/// error, not attempted as an allocation.
#[test]
fn an_impossible_storage_size_is_an_error() {
    let mut bytes = std::fs::read(data("views.pth")).unwrap();
    // Central directory headers: signature PK\x01\x02, sizes at offsets 20 and 24, the name's
    // length at 28 and the name at 46.
    let mut patched = 0;
    let mut i = 0;
    while i + 46 <= bytes.len() {
        if bytes[i..i + 4] == *b"PK\x01\x02" {
            let name_len = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
            let name = &bytes[i + 46..i + 46 + name_len];
            if name.ends_with(b"data/0") {
                for field in [20, 24] {
                    bytes[i + field..i + field + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
                }
                patched += 1;
            }
        }
        i += 1;
    }
    assert_eq!(patched, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.pth");
    std::fs::write(&path, &bytes).unwrap();
    match Checkpoint::load(&path) {
        Err(mrsampler_models::Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("bytes declared in a"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
