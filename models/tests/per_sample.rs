//! One call with a time per sample (`ScoreModel::predict_per_sample`, what `mrsampler serve`
//! batches requests at different steps with) gives each sample exactly what a call of its own
//! gives: the released architectures' time embeddings are per sample and their layers do not
//! mix the batch.

use candle_core::{Device, Tensor};
use mrsampler::ScoreModel;
use mrsampler_models::{LoadOptions, Mirrored, Network};

fn network(file: &str) -> Network {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    Network::load(&path, &LoadOptions::default()).unwrap()
}

/// A structured `(1, c, h, w)` image in `[0, 1]`.
fn image(c: usize, h: usize, w: usize, phase: f32) -> Tensor {
    let v: Vec<f32> = (0..c * h * w)
        .map(|k| {
            let (ch, i, j) = (k / (h * w), (k / w) % h, k % w);
            0.5 + 0.4 * ((i as f32 * 0.13 + ch as f32 + phase).sin() * (j as f32 * 0.09).cos())
        })
        .collect();
    Tensor::from_vec(v, (1, c, h, w), &Device::Cpu).unwrap()
}

fn assert_per_sample_is_separate(model: &mut impl ScoreModel<Tensor>, channels: usize) {
    let times = [3.0, 41.5, 97.0];
    let xs: Vec<Tensor> = (0..3).map(|k| image(channels, 24, 32, k as f32)).collect();
    let mus: Vec<Tensor> = (0..3)
        .map(|k| image(channels, 24, 32, 2.0 + k as f32))
        .collect();
    let batched = model
        .predict_per_sample(
            &Tensor::cat(&xs, 0).unwrap(),
            &Tensor::cat(&mus, 0).unwrap(),
            &times,
        )
        .unwrap();
    for k in 0..3 {
        let own = model.predict(&xs[k], &mus[k], times[k]).unwrap();
        let row = batched.narrow(0, k, 1).unwrap();
        let diff = (row - &own)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "sample {k} at t = {}", times[k]);
    }
    // Different times give different outputs (the times are read per sample).
    let same_x = Tensor::cat(&[&xs[0], &xs[0]], 0).unwrap();
    let same_mu = Tensor::cat(&[&mus[0], &mus[0]], 0).unwrap();
    let two = model
        .predict_per_sample(&same_x, &same_mu, &[3.0, 97.0])
        .unwrap();
    let gap = (two.narrow(0, 0, 1).unwrap() - two.narrow(0, 1, 1).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(gap > 0.0);
    // A time count that fits neither one time nor one per sample is refused.
    let err = model.predict_per_sample(&same_x, &same_mu, &[1.0, 2.0, 3.0]);
    assert!(err.is_err());
}

#[test]
fn unet_per_sample_times_are_separate_calls() {
    assert_per_sample_is_separate(&mut network("unet_nf4_d2.safetensors"), 3);
}

#[test]
fn nafnet_per_sample_times_are_separate_calls() {
    assert_per_sample_is_separate(&mut network("nafnet_w8_e11.safetensors"), 3);
}

#[test]
fn mirrored_margins_keep_per_sample_times() {
    assert_per_sample_is_separate(&mut Mirrored::new(network("unet_nf4_d2.safetensors"), 5), 3);
}

#[test]
fn tiles_of_several_images_keep_per_sample_times() {
    use mrsampler_models::{TileSpec, Tiled};
    // 24 × 32 images in 16-pixel tiles overlapping by 4: 2 × 3 tiles each, 4 per inner call.
    let spec = TileSpec::new(16, 4, 4).unwrap();
    assert_per_sample_is_separate(&mut Tiled::new(network("unet_nf4_d2.safetensors"), spec), 3);
}
