//! Bad checkpoints, option files and inputs give typed errors that name the problem.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mrsampler_models::{Checkpoint, Error, LoadOptions, Network, UpstreamOptions};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn options(text: &str) -> LoadOptions {
    LoadOptions {
        options: Some(UpstreamOptions::parse(text, Path::new("test.yml")).unwrap()),
        ..LoadOptions::default()
    }
}

const UNET: &str = "unet_nf4_d2";

#[test]
fn truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["pth", "safetensors"] {
        let bytes = std::fs::read(data(&format!("{UNET}.{ext}"))).unwrap();
        for keep in [bytes.len() / 2, bytes.len() - 100, 16] {
            let p = write(dir.path(), &format!("cut.{ext}"), &bytes[..keep]);
            match Checkpoint::load(&p) {
                Err(Error::Checkpoint { .. }) => {}
                other => panic!("{ext} cut to {keep} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn files_that_are_not_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.pth", b"", "0 bytes"),
        (
            "text.pth",
            b"this is not a checkpoint at all",
            "not safetensors",
        ),
        ("legacy.pth", b"\x80\x02\x8a\x0alegacy torch.save", "legacy"),
        (
            "png.safetensors",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
            "not safetensors",
        ),
    ];
    for (name, bytes, want) in cases {
        let e = Checkpoint::load(write(dir.path(), name, bytes)).unwrap_err();
        assert!(matches!(e, Error::Checkpoint { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
    let e = Checkpoint::load(dir.path().join("missing.pth")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn the_format_is_told_by_content_not_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let st = std::fs::read(data(&format!("{UNET}.safetensors"))).unwrap();
    let pth = std::fs::read(data(&format!("{UNET}.pth"))).unwrap();
    let a = Network::load(write(dir.path(), "a.pth", &st), &LoadOptions::default()).unwrap();
    let b = Network::load(
        write(dir.path(), "b.safetensors", &pth),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(a.config(), b.config());
}

#[test]
fn options_naming_another_architecture_are_refused() {
    let text = "network_G:\n  which_model_G: ConditionalNAFNet\n  setting:\n    width: 4\n";
    let e = Network::load(data(&format!("{UNET}.pth")), &options(text)).unwrap_err();
    assert!(
        matches!(&e, Error::ArchitectureMismatch { stated, found } if stated == "ConditionalNAFNet" && *found == "ConditionalUNet"),
        "{e:?}"
    );
}

#[test]
fn options_that_do_not_fit_name_the_first_mismatching_tensor() {
    let unet = |nf: usize, depth: usize| {
        format!(
            "network_G:\n  which_model_G: ConditionalUNet\n  setting:\n    in_nc: 3\n    out_nc: 3\n    nf: {nf}\n    depth: {depth}\n"
        )
    };
    // nf 8 instead of 4: the stem is the first tensor built.
    match Network::load(data(&format!("{UNET}.pth")), &options(&unet(8, 2))).unwrap_err() {
        Error::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "init_conv.weight");
            assert_eq!((expected, found), (vec![8, 6, 7, 7], vec![4, 6, 7, 7]));
        }
        e => panic!("{e:?}"),
    }
    // depth 1 instead of 2: level 0 becomes the last level, whose resampler is 3 × 3.
    match Network::load(data(&format!("{UNET}.pth")), &options(&unet(4, 1))).unwrap_err() {
        Error::ShapeMismatch { name, .. } => assert_eq!(name, "downs.0.3.weight"),
        e => panic!("{e:?}"),
    }
    // depth 3 instead of 2: a tensor of the third level is missing.
    match Network::load(data(&format!("{UNET}.pth")), &options(&unet(4, 3))).unwrap_err() {
        Error::MissingTensor { name, .. } => assert!(name.starts_with("downs.1.3"), "{name}"),
        Error::ShapeMismatch { name, .. } => assert!(name.starts_with("downs.1.3"), "{name}"),
        e => panic!("{e:?}"),
    }
    // The right options load.
    Network::load(data(&format!("{UNET}.pth")), &options(&unet(4, 2))).unwrap();
}

fn tensors(name: &str) -> Vec<(String, Tensor)> {
    let c = Checkpoint::load(data(name)).unwrap();
    c.names()
        .map(|n| (n.to_owned(), c.get(n).unwrap().clone()))
        .collect()
}

#[test]
fn missing_extra_and_reshaped_tensors_are_named() {
    let base = tensors(&format!("{UNET}.safetensors"));
    let build = |t: Vec<(String, Tensor)>| {
        Network::from_checkpoint(&Checkpoint::from_tensors(t), &LoadOptions::default())
    };

    let without: Vec<_> = base
        .iter()
        .filter(|(n, _)| n != "mid_block2.block1.proj.weight")
        .cloned()
        .collect();
    match build(without).unwrap_err() {
        Error::MissingTensor { name, .. } => assert_eq!(name, "mid_block2.block1.proj.weight"),
        e => panic!("{e:?}"),
    }

    let mut extra = base.clone();
    extra.push((
        "mid_block2.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    ));
    match build(extra).unwrap_err() {
        Error::UnexpectedTensor { name, .. } => assert_eq!(name, "mid_block2.extra.weight"),
        e => panic!("{e:?}"),
    }

    let reshaped: Vec<_> = base
        .iter()
        .map(|(n, t)| {
            if n == "ups.1.1.mlp.1.bias" {
                (
                    n.clone(),
                    Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
                )
            } else {
                (n.clone(), t.clone())
            }
        })
        .collect();
    match build(reshaped).unwrap_err() {
        Error::ShapeMismatch { name, found, .. } => {
            assert_eq!(name, "ups.1.1.mlp.1.bias");
            assert_eq!(found, vec![7]);
        }
        e => panic!("{e:?}"),
    }

    let unrelated = vec![(
        "encoder.layer.0.weight".to_owned(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    )];
    assert!(matches!(
        build(unrelated).unwrap_err(),
        Error::UnknownArchitecture { .. }
    ));
}

#[test]
fn inputs_the_network_cannot_take_are_refused() {
    let net = Network::load(data(&format!("{UNET}.pth")), &LoadOptions::default()).unwrap();
    let dev = Device::Cpu;
    let img = |c: usize, h: usize, w: usize| Tensor::zeros((1, c, h, w), DType::F32, &dev).unwrap();
    let cases = [
        (img(1, 16, 16), img(1, 16, 16), "3-channel"),
        (img(3, 16, 16), img(3, 16, 8), "must be equal"),
        (img(3, 1, 16), img(3, 1, 16), "too small"),
        (img(3, 0, 16), img(3, 0, 16), "empty"),
    ];
    for (x, mu, want) in cases {
        let e = net.forward(&x, &mu, &[10.0]).unwrap_err();
        assert!(
            matches!(e, Error::Input { .. }) && e.to_string().contains(want),
            "{e}"
        );
    }
    let x = img(3, 16, 16);
    let e = net.forward(&x, &x, &[f32::NAN]).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
    let rank3 = Tensor::zeros((3, 16, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        net.forward(&rank3, &rank3, &[1.0]).unwrap_err(),
        Error::Input { .. }
    ));
}
