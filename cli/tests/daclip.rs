//! The DA-CLIP commands on upstream-layout random-weight checkpoints that are not shipped
//! (the models crate's parity pair, `models/tests/data/daclip/`): `net` with contexts
//! reproduces upstream's output, `encode` writes the encoder's contexts, `convert` keeps only
//! the encoder, and `restore` runs the pair without a configuration file.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{case, mrsampler, rgb};
use mrsampler_models::DaClipEncoder;

fn daclip(name: &str) -> String {
    case(&format!("daclip/{name}")).display().to_string()
}

fn io() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(daclip("daclip_nf32.io.safetensors"), &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap()
}

#[test]
fn net_with_contexts_reproduces_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let io = io();
    let path = |k: &str| dir.path().join(format!("{k}.npy"));
    for k in ["xt", "mu", "image_context", "degra_context"] {
        io[k].write_npy(path(k)).unwrap();
    }
    let s = |k: &str| path(k).display().to_string();
    let (ok, text) = mrsampler(&[
        "net",
        "--weights",
        &daclip("daclip_nf32.pth"),
        "--xt",
        &s("xt"),
        "--mu",
        &s("mu"),
        "--t",
        "37.5",
        "--image-context",
        &s("image_context"),
        "--degra-context",
        &s("degra_context"),
        "--out",
        &s("out"),
    ]);
    assert!(ok, "{text}");
    let out = Tensor::read_npy(path("out")).unwrap();
    assert!(rel_err(&out, &io["out_0"]) <= 1e-5, "{text}");

    // Without the image context the spatial transformers cannot run: a clear error.
    let (ok, text) = mrsampler(&[
        "net",
        "--weights",
        &daclip("daclip_nf32.pth"),
        "--xt",
        &s("xt"),
        "--mu",
        &s("mu"),
        "--t",
        "37.5",
        "--out",
        &s("out2"),
    ]);
    assert!(!ok && text.contains("image context"), "{text}");
}

#[test]
fn encode_convert_and_restore_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    rgb(&dir.path().join("in.png"), 61, 45, 3);
    let (ok, text) = mrsampler(&[
        "encode",
        "--weights",
        &daclip("daclip_vit_w128_l2.pt"),
        "--image",
        &p("in.png"),
        "--out-image-context",
        &p("ic.npy"),
        "--out-degra-context",
        &p("dc.npy"),
    ]);
    assert!(ok, "{text}");
    let ic = Tensor::read_npy(p("ic.npy")).unwrap();
    assert_eq!(ic.dims(), &[1, 32]);
    let enc =
        DaClipEncoder::load(daclip("daclip_vit_w128_l2.pt"), &Device::Cpu, DType::F32).unwrap();
    let img = image::open(p("in.png")).unwrap().to_rgb32f();
    let pixels = Tensor::from_vec(img.into_raw(), (1, 45, 61, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    let want = enc.contexts(&pixels).unwrap();
    assert!(rel_err(&ic, &want.image) < 1e-6);

    // Convert keeps the encoder's tensors only; f32 loads to the same encoder, f16 close.
    for (dtype, tol) in [("f32", 0.0), ("f16", 2e-3)] {
        let out = p(&format!("enc.{dtype}.safetensors"));
        let (ok, text) = mrsampler(&[
            "convert",
            &daclip("daclip_vit_w128_l2.pt"),
            &out,
            "--dtype",
            dtype,
        ]);
        assert!(ok && text.contains("DA-CLIP image encoder"), "{text}");
        let small = DaClipEncoder::load(&out, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(small.parameter_count(), enc.parameter_count());
        let got = small.contexts(&pixels).unwrap();
        let err = rel_err(&got.degradation, &want.degradation);
        eprintln!("converted to {dtype}: degradation context relative error {err:.2e}");
        assert!(err <= tol, "{dtype}: {err}");
    }

    // The pair restores an image with no option file and no preset (DA-CLIP's schedule is
    // the default for a DA-CLIP denoiser), whole and tiled.
    for extra in [&[][..], &["--tile", "32", "--overlap", "8"][..]] {
        let mut args = vec![
            "restore",
            &p("in.png"),
            "--out",
            &p("out"),
            "--model",
            &daclip("daclip_nf32.pth"),
            "--clip",
            &daclip("daclip_vit_w128_l2.pt"),
            "--nfe",
            "3",
            "--quiet",
            "--overwrite",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = mrsampler(&args);
        assert!(ok, "{text}");
        let restored = image::open(p("out/in.png")).unwrap();
        assert_eq!((restored.width(), restored.height()), (61, 45));
    }

    // The denoiser alone is refused with what to add.
    let (ok, text) = mrsampler(&[
        "restore",
        &p("in.png"),
        "--out",
        &p("out"),
        "--model",
        &daclip("daclip_nf32.pth"),
    ]);
    assert!(!ok && text.contains("--clip"), "{text}");
}
