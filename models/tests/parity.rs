//! Parity with the upstream PyTorch modules.
//!
//! `tests/data/` holds small random-weight configurations built and run by the upstream
//! modules (`tools/upstream_parity.py`, which imports them from an upstream checkout): the
//! weights as `.pth` (written by `torch.save`) and safetensors, the inputs and upstream's
//! outputs at a fractional and an integer time. Each case is loaded from both files with the
//! configuration inferred from the tensors, and must reproduce upstream's outputs to 1e-5
//! relative (max |Δ| / max |reference|, f32).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use mrsampler_models::{Checkpoint, LoadOptions, NafNetConfig, Network, NetworkConfig, UNetConfig};
use serde_json::Value;

mod common;
use common::{data, rel_err};

const TOL: f64 = 1e-5;

fn manifest(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The configuration upstream's constructor arguments describe.
fn expected_config(case: &Value) -> NetworkConfig {
    let s = &case["setting"];
    let n = |k: &str| s[k].as_u64().unwrap() as usize;
    match case["arch"].as_str().unwrap() {
        "ConditionalUNet" => {
            let mut c = UNetConfig::ir_sde(n("in_nc"), n("out_nc"), n("nf"), n("depth"));
            if case["module"] == "denoising-sde" {
                c.conditional = false;
                c.mid_attention = mrsampler_models::Attention::Full;
            }
            NetworkConfig::UNet(c)
        }
        _ => NetworkConfig::NafNet(NafNetConfig {
            img_channels: n("img_channel"),
            width: n("width"),
            enc_blocks: usizes(&s["enc_blk_nums"]),
            middle_blocks: n("middle_blk_num"),
            dec_blocks: usizes(&s["dec_blk_nums"]),
            conditional: true,
        }),
    }
}

#[test]
fn every_case_matches_upstream_from_pth_and_safetensors() {
    let cases = manifest("cases.json");
    assert!(cases.len() >= 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let io =
            candle_core::safetensors::load(data(&format!("{name}.io.safetensors")), &Device::Cpu)
                .unwrap();
        let times: Vec<f64> = case["times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        for ext in ["pth", "safetensors"] {
            let net = Network::load(data(&format!("{name}.{ext}")), &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"));
            assert_eq!(
                net.config(),
                expected_config(case),
                "{name}.{ext}: inferred configuration"
            );
            assert_eq!(
                net.parameter_count() as u64,
                case["params"].as_u64().unwrap(),
                "{name}"
            );
            let (xt, mu) = (&io["xt"], &io["mu"]);
            let b = xt.dim(0).unwrap();
            for (i, &t) in times.iter().enumerate() {
                let out = net.forward(xt, mu, &vec![t as f32; b]).unwrap();
                let err = rel_err(&out, &io[&format!("out_{i}")]);
                assert!(
                    err <= TOL,
                    "{name}.{ext} at t = {t}: relative error {err:.2e}"
                );
                eprintln!("{name}.{ext} t = {t}: {err:.2e}");
            }
        }
    }
}

#[test]
fn default_configurations_have_upstreams_parameter_counts_and_shapes() {
    for d in manifest("defaults.json") {
        let config = expected_config(&d);
        let net = Network::random(config, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            net.parameter_count() as u64,
            d["params"].as_u64().unwrap(),
            "{}",
            d["name"]
        );
        let x = Tensor::randn(0f32, 1f32, (1, 3, 64, 48), &Device::Cpu).unwrap();
        let out = net.forward(&x, &x, &[50.0]).unwrap();
        assert_eq!(out.dims(), &[1, 3, 64, 48], "{}", d["name"]);
    }
}

/// Random weights come from seeds taken from the tensors' names: two builds of one
/// configuration hold the same numbers (what lets `device_check` compare a GPU copy with the
/// CPU's), while different tensors of the same shape differ.
#[test]
fn random_weights_are_reproducible() {
    let config = NetworkConfig::NafNet(NafNetConfig {
        width: 8,
        enc_blocks: vec![1, 1],
        dec_blocks: vec![1, 1],
        ..NafNetConfig::refusion()
    });
    let a = Network::random(config.clone(), &Device::Cpu, DType::F32).unwrap();
    let b = Network::random(config, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let (ya, yb) = (
        a.forward(&x, &x, &[50.0]).unwrap(),
        b.forward(&x, &x, &[50.0]).unwrap(),
    );
    let diff: f32 = (ya - &yb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(diff, 0.0);
    assert!(
        yb.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn wrapped_and_prefixed_state_dicts_load() {
    // A `{"state_dict": {"module.<name>": …}}` file as DataParallel training code writes it.
    let ckpt = Checkpoint::load(data("nafnet_w8_e11_wrapped.pth")).unwrap();
    let plain = Checkpoint::load(data("nafnet_w8_e11.safetensors")).unwrap();
    assert_eq!(
        ckpt.names().collect::<Vec<_>>(),
        plain.names().collect::<Vec<_>>()
    );
    Network::from_checkpoint(&ckpt, &LoadOptions::default()).unwrap();
}

#[test]
fn inference_tells_conditional_input_when_in_and_out_channels_differ() {
    // IR-SDE's U-Net with in_nc = 3, out_nc = 1: the stem sees 6 channels, the output has 1.
    let c = Checkpoint::load(data("unet_nf4_d2.safetensors")).unwrap();
    let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    let tensors = c.names().map(|n| {
        let t = match n {
            "final_conv.weight" => zeros(&[1, 4, 3, 3]),
            "final_conv.bias" => zeros(&[1]),
            _ => c.get(n).unwrap().clone(),
        };
        (n.to_owned(), t)
    });
    let net = Network::from_checkpoint(&Checkpoint::from_tensors(tensors), &LoadOptions::default())
        .unwrap();
    match net.config() {
        NetworkConfig::UNet(u) => {
            assert_eq!((u.in_channels, u.out_channels, u.conditional), (3, 1, true))
        }
        other => panic!("{other:?}"),
    }
    let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.forward(&x, &x, &[5.0]).unwrap().dims(), &[1, 1, 8, 8]);
}

#[test]
fn a_loaded_network_is_a_score_model_in_any_float_dtype() {
    use mrsampler::{MrSampler, Sampler, ScoreModel, SeededNoise};
    let mut net = Network::load(data("nafnet_w8_e11.pth"), &LoadOptions::default()).unwrap();
    let io =
        candle_core::safetensors::load(data("nafnet_w8_e11.io.safetensors"), &Device::Cpu).unwrap();
    let (xt, mu) = (&io["xt"], &io["mu"]);
    // The network computes in its own dtype (f32) and answers in the caller's.
    let eps32 = net.predict(xt, mu, 37.5).unwrap();
    assert!(rel_err(&eps32, &io["out_0"]) <= TOL);
    let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let eps64 = net.predict(&f64(xt), &f64(mu), 37.5).unwrap();
    assert_eq!(eps64.dtype(), DType::F64);
    assert_eq!(rel_err(&eps64.to_dtype(DType::F32).unwrap(), &eps32), 0.0);

    // Through the sampler: one evaluation per step, the image's shape, finite values.
    let schedule = mrsampler_models::preset("refusion-deraining")
        .unwrap()
        .schedule();
    let out = MrSampler::new(schedule, 5)
        .unwrap()
        .sample(&mut net, mu, None, &mut SeededNoise::new(3))
        .unwrap();
    assert_eq!(out.stats.nfe, 5);
    assert_eq!(out.x.dims(), mu.dims());
    let finite = out.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(finite.iter().all(|v| v.is_finite()));
}

/// The shipped network (`assets/restore/`, trained by `tools/train_restore.py` with the upstream
/// module) reproduces the PyTorch output recorded at training time, loaded with its option
/// file as a released checkpoint is: odd image size (padding), a fractional and an integer time.
#[test]
fn the_shipped_network_matches_its_pytorch_output() {
    use mrsampler_models::UpstreamOptions;
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/restore");
    let opts = LoadOptions {
        options: Some(UpstreamOptions::load(assets.join("options.yml")).unwrap()),
        ..LoadOptions::default()
    };
    let net = Network::load(assets.join("model.safetensors"), &opts).unwrap();
    let io =
        candle_core::safetensors::load(assets.join("parity.safetensors"), &Device::Cpu).unwrap();
    let t: Vec<f32> = io["t"].to_vec1().unwrap();
    let out = net.forward(&io["x"], &io["mu"], &t).unwrap();
    let err = rel_err(&out, &io["out"]);
    assert!(err <= TOL, "relative error {err:.2e}");
    let sde = opts.options.unwrap().sde.unwrap().schedule().unwrap();
    assert_eq!(sde, mrsampler::schedule::IrSdeSchedule::da_clip());
}
