//! Parity of DA-CLIP's denoiser, encoder and preprocessing with the upstream modules.
//!
//! `tests/data/daclip/` holds small random-weight configurations built and run by the
//! upstream code (`tools/daclip_parity.py`, which imports it from a daclip-uir checkout):
//! denoisers as upstream saves them (`.pth` state dicts), an encoder as a DA-CLIP training
//! checkpoint (wrapped, `module.`-prefixed, with the text tower, aliased `visual.*` entries
//! and optimizer state), their inputs and upstream's outputs. Outputs must match to 1e-5
//! relative (max |Δ| / max |reference|, f32).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use mrsampler::{MrSampler, Sampler, ScoreModel, SeededNoise};
use mrsampler_models::{
    ClipVisionConfig, ConditionalUNet, DaClip, DaClipEncoder, LoadOptions, Network, NetworkConfig,
    UNetConfig,
};
use serde_json::Value;

const TOL: f64 = 1e-5;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/daclip")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

fn io(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(data(&format!("{name}.io.safetensors")), &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    f64::from(
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    )
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap()) / max_abs(b)
}

fn n(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn config_of(setting: &Value) -> UNetConfig {
    let mult: Vec<usize> = setting["ch_mult"]
        .as_array()
        .unwrap()
        .iter()
        .map(n)
        .collect();
    UNetConfig::daclip(
        n(&setting["in_nc"]),
        n(&setting["out_nc"]),
        n(&setting["nf"]),
        &mult,
        n(&setting["context_dim"]),
        setting["use_degra_context"].as_bool().unwrap(),
        setting["use_image_context"].as_bool().unwrap(),
    )
}

fn unet(name: &str) -> ConditionalUNet {
    match Network::load(data(&format!("{name}.pth")), &LoadOptions::default()).unwrap() {
        Network::UNet(n) => *n,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn denoisers_match_upstream_with_contexts_and_without() {
    let cases = json("cases.json");
    let cases = cases["denoisers"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let net = unet(name);
        assert_eq!(net.config(), &config_of(&case["setting"]), "{name}");
        assert_eq!(net.parameter_count(), n(&case["params"]), "{name}");
        let io = io(name);
        let (xt, mu) = (&io["xt"], &io["mu"]);
        let b = xt.dim(0).unwrap();
        let cond = net
            .condition(Some(&io["image_context"]), Some(&io["degra_context"]))
            .unwrap();
        for (i, t) in case["times"].as_array().unwrap().iter().enumerate() {
            let t = t.as_f64().unwrap() as f32;
            let out = net.forward_conditioned(xt, mu, &vec![t; b], &cond).unwrap();
            let err = rel_err(&out, &io[&format!("out_{i}")]);
            eprintln!("{name} t = {t}: {err:.2e}");
            assert!(err <= TOL, "{name} at t = {t}: relative error {err:.2e}");
        }
        let t0 = case["times"][0].as_f64().unwrap() as f32;
        match io.get("plain_0") {
            // Upstream skips the prompt path without a degradation context.
            Some(plain) => {
                let out = net.forward(xt, mu, &vec![t0; b]).unwrap();
                assert!(rel_err(&out, plain) <= TOL, "{name}: without contexts");
            }
            // With spatial transformers the image context is required.
            None => {
                let err = net.forward(xt, mu, &vec![t0; b]).unwrap_err().to_string();
                assert!(err.contains("image context"), "{err}");
            }
        }
    }
}

#[test]
fn contexts_of_the_wrong_shape_or_batch_are_refused() {
    let net = unet("daclip_nf32");
    let io = io("daclip_nf32");
    let wide = Tensor::zeros((2, 17), DType::F32, &Device::Cpu).unwrap();
    let err = net.condition(Some(&wide), None).unwrap_err().to_string();
    assert!(err.contains("[batch, 32]"), "{err}");
    let one = io["image_context"].narrow(0, 0, 1).unwrap();
    let err = net
        .condition(Some(&one), Some(&io["degra_context"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch"), "{err}");
    // Contexts for 3 samples, input of 2.
    let three = Tensor::zeros((3, 32), DType::F32, &Device::Cpu).unwrap();
    let cond = net.condition(Some(&three), Some(&three)).unwrap();
    let err = net
        .forward_conditioned(&io["xt"], &io["mu"], &[1.0], &cond)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch of 3"), "{err}");
    // An IR-SDE network takes no contexts.
    let plain = Network::random(
        NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 4, 2)),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let Network::UNet(plain) = plain else {
        unreachable!()
    };
    let err = plain.condition(Some(&three), None).unwrap_err().to_string();
    assert!(err.contains("takes no contexts"), "{err}");
}

fn encoder_config(case: &Value) -> ClipVisionConfig {
    let v = &case["vision"];
    let width = n(&v["width"]);
    ClipVisionConfig {
        image_size: n(&v["image_size"]),
        patch_size: n(&v["patch_size"]),
        width,
        layers: n(&v["layers"]),
        heads: width / 64,
        mlp_width: 4 * width,
        output_dim: n(&case["embed_dim"]),
    }
}

#[test]
fn encoder_matches_upstream_from_a_training_checkpoint() {
    let case = json("cases.json")["encoder"].clone();
    let name = case["name"].as_str().unwrap();
    // Configuration inferred from the shapes (heads: open_clip's width / 64).
    let enc = DaClipEncoder::load(data(&format!("{name}.pt")), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(enc.config(), &encoder_config(&case));
    assert_eq!(enc.parameter_count(), n(&case["params"]));
    let io = io(name);
    let ctx = enc.encode(&io["pixels"]).unwrap();
    let e_img = rel_err(&ctx.image, &io["image_features"]);
    let e_deg = rel_err(&ctx.degradation, &io["degra_features"]);
    eprintln!("encoder: image {e_img:.2e}, degradation {e_deg:.2e}");
    assert!(e_img <= TOL && e_deg <= TOL, "{e_img:.2e} {e_deg:.2e}");
    // The two differ (the controller is not a copy), so each was checked on its own.
    assert!(rel_err(&ctx.image, &ctx.degradation) > 0.1);
    // Pixels of the wrong size are refused with the size to use.
    let err = enc
        .encode(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[batch, 3, 48, 48]"), "{err}");
}

#[test]
fn preprocessing_matches_upstreams_clip_transform_to_8_bit_resampling() {
    let io = io("preprocess");
    let enc = DaClipEncoder::random(ClipVisionConfig::vit_b_32(), &Device::Cpu, DType::F32);
    // (Only the preprocessing is used; a random encoder of the released shape is cheap
    // enough to build and says which size it takes.)
    let enc = enc.unwrap();
    let ours = enc.preprocess(&io["image"].unsqueeze(0).unwrap()).unwrap();
    let want = io["pixels"].unsqueeze(0).unwrap();
    assert_eq!(ours.dims(), want.dims());
    // The crate resamples with PIL's arithmetic (bicubic, fixed point, 8-bit passes), so the
    // 8-bit pixels are the same; what remains is f32 rounding in the normalisation.
    let max = max_abs(&(&ours - &want).unwrap());
    assert!(max <= 1e-6, "max |Δ| {max}");
}

/// Shrinking, landscape and portrait: the crate's preprocessing gives exactly the 8-bit crop
/// that upstream's transform (PIL's resize) gives (`tools/pil_preprocess_cases.py`).
#[test]
fn preprocessing_matches_pil_when_shrinking_non_square_images() {
    let io =
        candle_core::safetensors::load(data("preprocess_sizes.safetensors"), &Device::Cpu).unwrap();
    let enc =
        DaClipEncoder::random(ClipVisionConfig::vit_b_32(), &Device::Cpu, DType::F32).unwrap();
    let mean = mrsampler_models::CLIP_MEAN;
    let std = mrsampler_models::CLIP_STD;
    for key in ["a", "b"] {
        let bytes = io[&format!("image_{key}")].clone();
        let dims = bytes.dims().to_vec();
        // Each byte k as the float32 k / 255, as the tool gave it to upstream's transform.
        let image: Vec<f32> = bytes
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap()
            .iter()
            .map(|&k| f32::from(k) / 255.0)
            .collect();
        let image = Tensor::from_vec(image, dims.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = enc.preprocess(&image).unwrap().squeeze(0).unwrap();
        let ours = ours.to_vec3::<f32>().unwrap();
        let want = io[&format!("bytes_{key}")].to_vec3::<u8>().unwrap();
        let mut worst = 0f32;
        for c in 0..3 {
            for (row, want_row) in ours[c].iter().zip(&want[c]) {
                for (&v, &k) in row.iter().zip(want_row) {
                    let w = (f32::from(k) / 255.0 - mean[c]) / std[c];
                    worst = worst.max((v - w).abs());
                }
            }
        }
        assert!(worst <= 1e-6, "{key} {dims:?}: max |Δ| {worst}");
    }
}

#[test]
fn released_configurations_have_upstreams_parameter_counts() {
    let d = json("defaults.json");
    let d = d.as_array().unwrap();
    let released = UNetConfig::daclip(3, 3, 64, &[1, 2, 4, 8], 512, true, true);
    assert_eq!(config_of(&d[0]["setting"]), released);
    let net = ConditionalUNet::random(released, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(net.parameter_count(), n(&d[0]["params"]));
    let enc =
        DaClipEncoder::random(ClipVisionConfig::vit_b_32(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(enc.parameter_count(), n(&d[1]["params"]));
}

#[test]
fn the_pipeline_conditions_once_and_restores() {
    let enc_case = json("cases.json")["encoder"].clone();
    let enc = DaClipEncoder::load(
        data(&format!("{}.pt", enc_case["name"].as_str().unwrap())),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    // The prompt-only denoiser takes 24-wide contexts; the encoder gives 32-wide ones.
    let err = DaClip::new(unet("daclip_nf32_degra"), enc.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("24-wide") && err.contains("32-wide"), "{err}");

    // The parity pair: an upstream-layout denoiser and encoder of matching width.
    let net = unet("daclip_nf32");
    let mut model = DaClip::new(net, enc.clone()).unwrap();
    let lq = Tensor::rand(0f32, 1f32, (1, 3, 30, 41), &Device::Cpu).unwrap();
    let contexts = model.condition_on(&lq).unwrap();
    let direct = enc.contexts(&lq).unwrap();
    assert_eq!(rel_err(&contexts.image, &direct.image), 0.0);
    // The model's answer is the denoiser's with those contexts.
    let xt = (&lq + 0.1).unwrap();
    let cond = model
        .network()
        .condition(Some(&direct.image), Some(&direct.degradation))
        .unwrap();
    let want = model
        .network()
        .forward_conditioned(&xt, &lq, &[20.0], &cond)
        .unwrap();
    assert_eq!(rel_err(&model.predict(&xt, &lq, 20.0).unwrap(), &want), 0.0);
    // Not conditioned: the first call for a μ computes that μ's contexts.
    let mut lazy = DaClip::new(unet("daclip_nf32"), enc.clone()).unwrap();
    assert_eq!(rel_err(&lazy.predict(&xt, &lq, 20.0).unwrap(), &want), 0.0);
    let other = (&lq * 0.5).unwrap();
    let cond = model
        .network()
        .condition(
            Some(&enc.contexts(&other).unwrap().image),
            Some(&enc.contexts(&other).unwrap().degradation),
        )
        .unwrap();
    let want_other = model
        .network()
        .forward_conditioned(&xt, &other, &[20.0], &cond)
        .unwrap();
    assert_eq!(
        rel_err(&lazy.predict(&xt, &other, 20.0).unwrap(), &want_other),
        0.0
    );
    // Conditioned on one image, a second image gets its own contexts (not the first's) ...
    let mut conditioned = DaClip::new(unet("daclip_nf32"), enc.clone()).unwrap();
    conditioned.condition_on(&lq).unwrap();
    let first = conditioned.predict(&xt, &other, 20.0).unwrap();
    assert_eq!(rel_err(&first, &want_other), 0.0);
    // ... unless contexts are pinned: then every μ uses them.
    conditioned.use_contexts(&direct).unwrap();
    let pinned = conditioned.predict(&xt, &other, 20.0).unwrap();
    let want_pinned = model
        .network()
        .forward_conditioned(
            &xt,
            &other,
            &[20.0],
            &model
                .network()
                .condition(Some(&direct.image), Some(&direct.degradation))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(rel_err(&pinned, &want_pinned), 0.0);
    assert!(
        rel_err(&pinned, &want_other) > 1e-6,
        "the two images' contexts differ"
    );
    // Through the sampler on the DA-CLIP schedule.
    let schedule = mrsampler_models::preset("daclip").unwrap().schedule();
    let out = MrSampler::new(schedule, 4)
        .unwrap()
        .sample(&mut model, &lq, None, &mut SeededNoise::new(1))
        .unwrap();
    assert_eq!(out.x.dims(), lq.dims());
    assert!(max_abs(&out.x).is_finite());
}

#[test]
fn an_upstream_option_file_states_the_denoiser() {
    // The `network_G` section of daclip-uir's options/test.yml, with the parity case's values.
    let yml = "network_G:\n  which_model_G: ConditionalUNet\n  setting:\n    in_nc: 3\n    \
               out_nc: 3\n    nf: 32\n    ch_mult: [1, 1, 1, 1]\n    context_dim: 32\n    \
               use_degra_context: true\n    use_image_context: true\n";
    let options =
        mrsampler_models::UpstreamOptions::parse(yml, std::path::Path::new("test.yml")).unwrap();
    let opts = LoadOptions {
        options: Some(options),
        ..LoadOptions::default()
    };
    let net = Network::load(data("daclip_nf32.pth"), &opts).unwrap();
    let want = UNetConfig::daclip(3, 3, 32, &[1, 1, 1, 1], 32, true, true);
    assert_eq!(net.config(), NetworkConfig::UNet(want));
}

#[test]
fn a_malformed_encoder_checkpoint_is_an_error_not_a_panic() {
    let ckpt = mrsampler_models::Checkpoint::load(data("daclip_vit_w128_l2.pt")).unwrap();
    let broken = ckpt.names().map(|n| {
        let t = if n == "clip.visual.conv1.weight" {
            Tensor::zeros(128, DType::F32, &Device::Cpu).unwrap()
        } else {
            ckpt.get(n).unwrap().clone()
        };
        (n.to_owned(), t)
    });
    let broken = mrsampler_models::Checkpoint::from_tensors(broken);
    let err = DaClipEncoder::from_checkpoint(&broken, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv1.weight") && err.contains("4-D"), "{err}");
    // The controller alone missing: told apart from a plain CLIP checkpoint.
    let plain = ckpt.retain(|n| !n.starts_with("visual_control."));
    let err = DaClipEncoder::from_checkpoint(&plain, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("controller"), "{err}");
}

#[test]
fn loading_from_a_file_reports_unused_and_missing_tensors_as_building_from_a_checkpoint_does() {
    // `load` builds from a checkpoint it owns (each tensor dropped as its layer takes it);
    // what it refuses must be what `from_checkpoint` refuses.
    let ckpt = mrsampler_models::Checkpoint::load(data("daclip_vit_w128_l2.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = ckpt
        .names()
        .map(|n| (n.to_owned(), ckpt.get(n).unwrap().clone()))
        .chain([(
            "visual_control.transformer.stray".to_owned(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        )]);
    let extra = mrsampler_models::Checkpoint::from_tensors(extra);
    let path = dir.path().join("extra.safetensors");
    extra.save_safetensors(&path, DType::F32).unwrap();
    let from_file = DaClipEncoder::load(&path, &Device::Cpu, DType::F32).unwrap_err();
    let built = DaClipEncoder::from_checkpoint(&extra, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        from_file
            .to_string()
            .contains("visual_control.transformer.stray"),
        "{from_file}"
    );
    assert_eq!(from_file.to_string(), built.to_string());

    let short = ckpt.retain(|n| n != "visual_control.transformer.zero_modules.1.weight");
    let path = dir.path().join("short.safetensors");
    short.save_safetensors(&path, DType::F32).unwrap();
    let from_file = DaClipEncoder::load(&path, &Device::Cpu, DType::F32).unwrap_err();
    let built = DaClipEncoder::from_checkpoint(&short, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        from_file.to_string().contains("zero_modules.1.weight"),
        "{from_file}"
    );
    assert_eq!(from_file.to_string(), built.to_string());
}
