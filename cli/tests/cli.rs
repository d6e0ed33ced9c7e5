//! The `mrsampler` binary on the models crate's parity cases.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{case, mrsampler};

/// `mrsampler net` on the given weights and `.npy` inputs at t = 37.5.
fn net(weights: &Path, xt: &str, mu: &str, out: &Path) -> (bool, String) {
    let (w, o) = (weights.to_str().unwrap(), out.to_str().unwrap());
    mrsampler(&[
        "net",
        "--weights",
        w,
        "--xt",
        xt,
        "--mu",
        mu,
        "--t",
        "37.5",
        "--out",
        o,
    ])
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Writes the case's `xt` and `mu` as `.npy`; returns their paths and the reference output at
/// the case's first time.
fn npy_inputs(dir: &Path, name: &str) -> (String, String, Tensor) {
    let io = candle_core::safetensors::load(case(&format!("{name}.io.safetensors")), &Device::Cpu)
        .unwrap();
    let (xt, mu) = (dir.join("xt.npy"), dir.join("mu.npy"));
    io["xt"].write_npy(&xt).unwrap();
    io["mu"].write_npy(&mu).unwrap();
    (
        xt.display().to_string(),
        mu.display().to_string(),
        io["out_0"].clone(),
    )
}

#[test]
fn net_reproduces_upstream_and_convert_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (xt, mu, want) = npy_inputs(dir.path(), "nafnet_w8_e11");
    let out = dir.path().join("out.npy");
    let pth = case("nafnet_w8_e11_wrapped.pth");
    let (ok, log) = net(&pth, &xt, &mu, &out);
    assert!(ok, "{log}");
    let got = Tensor::read_npy(&out).unwrap();
    assert!(rel_err(&got, &want) <= 1e-5, "{}", rel_err(&got, &want));

    // convert: the wrapped, prefixed .pth becomes a plain safetensors file that runs the same.
    let st = dir.path().join("clean.safetensors");
    let (ok, log) = mrsampler(&["convert", pth.to_str().unwrap(), st.to_str().unwrap()]);
    assert!(ok, "{log}");
    assert!(
        log.contains("ConditionalNAFNet") && log.contains("27027 parameters"),
        "{log}"
    );
    let names = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    assert!(names.keys().all(|k| !k.starts_with("module.")));
    let out2 = dir.path().join("out2.npy");
    let (ok, log) = net(&st, &xt, &mu, &out2);
    assert!(ok, "{log}");
    assert_eq!(rel_err(&Tensor::read_npy(&out2).unwrap(), &got), 0.0);

    let (ok, log) = mrsampler(&["info", st.to_str().unwrap()]);
    assert!(ok && log.contains("width=8 enc_blk_nums=[1, 1]"), "{log}");

    // f16 storage: half the size, run in f32, within f16's rounding of the weights.
    let half = dir.path().join("half.safetensors");
    let (ok, log) = mrsampler(&[
        "convert",
        pth.to_str().unwrap(),
        half.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    assert!(ok, "{log}");
    let (full_len, half_len) = (
        std::fs::metadata(&st).unwrap().len(),
        std::fs::metadata(&half).unwrap().len(),
    );
    assert!(half_len * 10 < full_len * 6, "{half_len} vs {full_len}");
    let out3 = dir.path().join("out3.npy");
    let (ok, log) = net(&half, &xt, &mu, &out3);
    assert!(ok, "{log}");
    let err = rel_err(&Tensor::read_npy(&out3).unwrap(), &want);
    assert!(err > 0.0 && err < 5e-3, "f16 weights: {err}");
}

#[test]
fn bad_invocations_fail_with_a_message_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (xt, mu, _) = npy_inputs(dir.path(), "unet_nf4_d2");
    let w = case("unet_nf4_d2.pth");
    let w = w.to_str().unwrap();
    let out = dir.path().join("out.npy");
    let o = out.to_str().unwrap();
    // (weights, x_t, extra arguments, what the message must say)
    let cases: [(&str, &str, &[&str], &str); 5] = [
        ("/nonexistent.pth", &xt, &[], "cannot read"),
        (w, &xt, &["--device", "cuda:0"], "--features cuda"),
        (w, &xt, &["--device", "tpu"], "unknown device"),
        (w, "/nonexistent.npy", &[], "nonexistent.npy"),
        (&xt, &xt, &[], "not a readable checkpoint"),
    ];
    for (weights, x, extra, want) in cases {
        let mut args = vec![
            "net",
            "--weights",
            weights,
            "--xt",
            x,
            "--mu",
            &mu,
            "--t",
            "1",
        ];
        args.extend(["--out", o].iter().chain(extra));
        let (ok, log) = mrsampler(&args);
        assert!(
            !ok && log.contains("error:") && log.contains(want),
            "{args:?}: {log}"
        );
        assert!(!log.contains("panicked"), "{log}");
        assert!(!out.exists());
    }
    // A channel count the network does not take.
    let gray = dir.path().join("gray.npy");
    Tensor::zeros((1, 1, 8, 8), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&gray)
        .unwrap();
    let g = gray.to_str().unwrap();
    let (ok, log) = mrsampler(&[
        "net",
        "--weights",
        w,
        "--xt",
        g,
        "--mu",
        g,
        "--t",
        "1",
        "--out",
        o,
    ]);
    assert!(!ok && log.contains("3-channel"), "{log}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        3,
        "no partial files left"
    );
}
