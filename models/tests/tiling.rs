//! Tiled evaluation: exact when one tile covers the image, and without seams when it does not.

use candle_core::{DType, Device, Tensor};
use mrsampler::schedule::IrSdeSchedule;
use mrsampler::{FitTarget, MrSampler, NoNoise, Sampler, ScoreModel};
use mrsampler_models::{LoadOptions, Network, TileSpec, Tiled};

fn network() -> Network {
    // A shipped random-weight IR-SDE U-Net (nf 4, depth 2, RGB): a real convolutional network
    // whose receptive field is wider than the overlaps below.
    Network::load(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/unet_nf4_d2.safetensors"
        ),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// A smooth 3-channel image with some structure, (1, 3, h, w), in [0, 1].
fn image(h: usize, w: usize, phase: f32) -> Tensor {
    let v: Vec<f32> = (0..3 * h * w)
        .map(|k| {
            let (c, i, j) = (k / (h * w), (k / w) % h, k % w);
            0.5 + 0.4 * ((i as f32 * 0.11 + c as f32 + phase).sin() * (j as f32 * 0.07).cos())
        })
        .collect();
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// When one tile covers the image the network sees the image itself: a whole restore is
/// bit-for-bit the untiled one.
#[test]
fn covering_tile_is_exact() {
    let (mu, x) = (image(48, 40, 0.0), image(48, 40, 1.3));
    let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 4).unwrap();
    let whole = sampler
        .sample(&mut network(), &mu, Some(x.clone()), &mut NoNoise)
        .unwrap();
    let mut tiled = Tiled::new(network(), TileSpec::new(64, 16, 4).unwrap());
    assert_eq!(tiled.tile_count(48, 40), 1);
    let tiled_out = sampler
        .sample(&mut tiled, &mu, Some(x), &mut NoNoise)
        .unwrap();
    assert_eq!(to_vec(&whole.x), to_vec(&tiled_out.x));
}

/// A pointwise network sees the same values in any tile, so with several overlapping tiles the
/// blend (Σ wᵢ·vᵢ / Σ wᵢ with equal vᵢ) must give the untiled output back to rounding: this
/// checks the cutting, batching and blending arithmetic on its own.
#[test]
fn pointwise_network_is_unchanged_by_tiling() {
    struct Pointwise;
    impl ScoreModel<Tensor> for Pointwise {
        fn fit_target(&self) -> FitTarget {
            FitTarget::Noise
        }
        fn predict(
            &mut self,
            x: &Tensor,
            mu: &Tensor,
            t: f64,
        ) -> Result<Tensor, mrsampler::ModelError> {
            Ok(((x - mu)?.tanh()? * (0.01 * t))?)
        }
    }
    let (mu, x) = (image(70, 90, 0.0), image(70, 90, 1.3));
    let whole = to_vec(&Pointwise.predict(&x, &mu, 40.0).unwrap());
    let mut tiled = Tiled::new(Pointwise, TileSpec::new(32, 12, 5).unwrap());
    assert!(tiled.tile_count(70, 90) > 6);
    let got = to_vec(&tiled.predict(&x, &mu, 40.0).unwrap());
    let worst = got
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "relative difference {worst}");
}

/// With several tiles a real U-Net's evaluation differs from the whole-image one (its linear
/// attention sees the whole input, so no tiling reproduces it), but the difference along the
/// tile borders is not larger than inside: the blend leaves no seam. Measured on this
/// random-weight network: relative RMS difference 0.071, border/interior ratio 0.84; the
/// bounds (0.15, 1.5) are regression bounds around those.
#[test]
fn overlapping_tiles_leave_no_seam() {
    let (h, w) = (96, 80);
    let (mu, x) = (image(h, w, 0.0), image(h, w, 1.3));
    let mut net = network();
    let whole = to_vec(&net.predict(&x, &mu, 40.0).unwrap());
    let spec = TileSpec::new(48, 16, 3).unwrap();
    let mut tiled = Tiled::new(network(), spec);
    assert_eq!(
        tiled.tile_count(h, w),
        6,
        "3 × 2 tiles, two network calls of 3"
    );
    let got = to_vec(&tiled.predict(&x, &mu, 40.0).unwrap());
    let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
    let diff: Vec<f32> = got.iter().zip(&whole).map(|(a, b)| a - b).collect();
    let rel = rms(&diff) / rms(&whole);
    eprintln!("relative RMS difference {rel:.4}");
    // Pixels within 2 of a tile edge that lies inside the image, against all others.
    let ys = mrsampler_models::tile_origins(h, 48, 16).unwrap();
    let xs = mrsampler_models::tile_origins(w, 48, 16).unwrap();
    let edge = |p: usize, origins: &[usize], len: usize| {
        origins.iter().any(|&o| {
            let inner = |e: usize| e > 0 && e < len && p.abs_diff(e) <= 2;
            inner(o) || inner(o + 48)
        })
    };
    let (mut border, mut inside) = (Vec::new(), Vec::new());
    for (k, d) in diff.iter().enumerate() {
        let (i, j) = ((k / w) % h, k % w);
        if edge(i, &ys, h) || edge(j, &xs, w) {
            border.push(*d);
        } else {
            inside.push(*d);
        }
    }
    let ratio = rms(&border) / rms(&inside);
    eprintln!("border/interior RMS ratio {ratio:.3}");
    assert!(
        rel < 0.15,
        "tiled evaluation differs by {rel:.3} relative RMS"
    );
    assert!(ratio < 1.5, "seam: border error {ratio:.2}× the interior's");
}

#[test]
fn bad_tilings_are_refused() {
    assert!(TileSpec::new(32, 32, 1).is_err());
    assert!(TileSpec::new(0, 0, 1).is_err());
    assert!(TileSpec::new(32, 8, 0).is_err());
    let mut tiled = Tiled::new(network(), TileSpec::new(32, 8, 2).unwrap());
    let flat = Tensor::zeros((3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(tiled.predict(&flat, &flat, 10.0).is_err());
    assert_eq!(ScoreModel::<Tensor>::fit_target(&tiled), FitTarget::Noise);
}

/// The wrapped network's own error comes out of `Tiled` as it went in (with its type and
/// sources), not flattened into a message.
#[test]
fn the_inner_networks_error_keeps_its_type() {
    #[derive(Debug, thiserror::Error)]
    #[error("the network's own failure")]
    struct Failure;

    struct Failing;
    impl ScoreModel<Tensor> for Failing {
        fn fit_target(&self) -> FitTarget {
            FitTarget::Noise
        }
        fn predict(
            &mut self,
            _: &Tensor,
            _: &Tensor,
            _: f64,
        ) -> Result<Tensor, mrsampler::ModelError> {
            Err(Failure.into())
        }
    }

    let x = Tensor::zeros((1, 3, 40, 40), DType::F32, &Device::Cpu).unwrap();
    for size in [16, 64] {
        // 16: several tiles; 64: one tile covering the image.
        let mut tiled = Tiled::new(Failing, TileSpec::new(size, 4, 2).unwrap());
        let err: mrsampler::BoxedError = tiled.predict(&x, &x, 10.0).unwrap_err().into();
        assert!(err.downcast_ref::<Failure>().is_some(), "{size}: {err}");
    }
}
