//! The public fast layers (`mrsampler_models::layers`) against `candle_nn`'s layers and the
//! formulas, on the same random tensors.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder, VarMap};
use mrsampler_models::layers::{
    ChannelNorm, Conv2d, GroupNorm, LayerNorm, TimeEmbedding, attention, on_pool,
};

fn cpu() -> Device {
    Device::Cpu
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A fixed pseudo-random pattern (no RNG state shared between tests).
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed) >> 40;
            (x as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// Largest |a − b| over the largest |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    (d / m).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn conv2d_equals_candle_nn() {
    for (cin, cout, k, stride, padding, groups) in [
        (8, 16, 3, 1, 1, 1),
        (8, 16, 1, 1, 0, 1),
        (16, 16, 3, 1, 1, 16),
        (8, 12, 3, 2, 1, 1),
        (8, 8, 3, 1, 1, 2),
        (4, 6, 5, 1, 2, 1),
    ] {
        let mut map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &cpu());
        let cfg = Conv2dConfig {
            padding,
            stride,
            groups,
            ..Default::default()
        };
        let reference = candle_nn::conv2d(cin, cout, k, cfg, vb.pp("c")).unwrap();
        let bias = randn(&[cout], 7);
        map.set_one("c.bias", bias).unwrap();
        let fast = Conv2d::new(vb.pp("c"), cin, cout, k, cfg).unwrap();
        let x = randn(&[2, cin, 21, 19], k as u64);
        let (a, b) = (fast.forward(&x).unwrap(), reference.forward(&x).unwrap());
        assert_eq!(a.dims(), b.dims());
        let e = rel(&a, &b);
        assert!(
            e < 1e-5,
            "{cin}→{cout} k{k} s{stride} p{padding} g{groups}: {e}"
        );
    }
    let vb = VarBuilder::zeros(DType::F32, &cpu());
    let dilated = Conv2dConfig {
        dilation: 2,
        ..Default::default()
    };
    assert!(Conv2d::new(vb.clone(), 4, 4, 3, dilated).is_err());
    let grouped = Conv2dConfig {
        groups: 3,
        ..Default::default()
    };
    assert!(Conv2d::new(vb, 4, 4, 3, grouped).is_err());
}

#[test]
fn norms_equal_candle_nn_and_the_formula() {
    let mut map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &cpu());
    let x = randn(&[2, 12, 9, 7], 3);
    let reference = candle_nn::group_norm(4, 12, 1e-5, vb.pp("g")).unwrap();
    map.set_one("g.weight", randn(&[12], 1)).unwrap();
    map.set_one("g.bias", randn(&[12], 2)).unwrap();
    let fast = GroupNorm::new(vb.pp("g"), 12, 4, 1e-5).unwrap();
    let e = rel(&fast.forward(&x).unwrap(), &reference.forward(&x).unwrap());
    assert!(e < 1e-5, "group norm: {e}");
    assert!(GroupNorm::new(vb.pp("g"), 12, 5, 1e-5).is_err());

    let y = randn(&[3, 5, 16], 4);
    let reference = candle_nn::layer_norm(16, 1e-5, vb.pp("l")).unwrap();
    map.set_one("l.weight", randn(&[16], 5)).unwrap();
    map.set_one("l.bias", randn(&[16], 6)).unwrap();
    let fast = LayerNorm::new(vb.pp("l"), 16, 1e-5).unwrap();
    let e = rel(&fast.forward(&y).unwrap(), &reference.forward(&y).unwrap());
    assert!(e < 1e-5, "layer norm: {e}");

    // Channel norm: each pixel normalised across channels, scaled by the weight.
    let w = randn(&[12], 8);
    let fast = ChannelNorm::new(vb.pp("c"), 12).unwrap();
    map.set_one("c.weight", w.clone()).unwrap();
    let mean = x.mean_keepdim(1).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(1).unwrap();
    let formula = centred
        .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&w.reshape((1, 12, 1, 1)).unwrap())
        .unwrap();
    let e = rel(&fast.forward(&x).unwrap(), &formula);
    assert!(e < 1e-5, "channel norm: {e}");
}

#[test]
fn attention_equals_the_formula() {
    let (q, k, v) = (
        randn(&[2, 3, 40, 8], 1),
        randn(&[2, 3, 30, 8], 2),
        randn(&[2, 3, 30, 8], 3),
    );
    let scale = 1.0 / 8f64.sqrt();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
    let formula = candle_nn::ops::softmax_last_dim(&scores)
        .unwrap()
        .matmul(&v)
        .unwrap();
    let e = rel(&attention(&q, &k, &v, scale).unwrap(), &formula);
    assert!(e < 1e-5, "attention: {e}");
}

#[test]
fn time_embedding_is_the_sinusoid_per_sample() {
    let emb = TimeEmbedding::new(8).unwrap();
    let t = Tensor::new(&[0f32, 3.0, 50.5], &cpu()).unwrap();
    let out: Vec<Vec<f32>> = emb.forward(&t).unwrap().to_vec2().unwrap();
    let f = |i: usize| (-(i as f32) * 10000f32.ln() / 3.0).exp();
    for (row, &ti) in out.iter().zip(&[0f32, 3.0, 50.5]) {
        for i in 0..4 {
            assert!((row[i] - (ti * f(i)).sin()).abs() < 1e-5);
            assert!((row[4 + i] - (ti * f(i)).cos()).abs() < 1e-5);
        }
    }
    assert!(TimeEmbedding::new(7).is_err());
}

#[test]
fn on_pool_runs_on_a_pool_thread_and_stays_in_the_callers_pool() {
    // From a thread outside every pool: moved onto the global pool.
    let outside = std::thread::spawn(|| {
        on_pool(&cpu(), || {
            (rayon::current_thread_index(), rayon::current_num_threads())
        })
    })
    .join()
    .unwrap();
    assert!(outside.0.is_some(), "ran outside the pool");
    // Inside a pool of its own: stays there (same size, still a pool thread).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let inside = pool.install(|| on_pool(&cpu(), rayon::current_num_threads));
    assert_eq!(inside, 3);
    // The layers give the same result on and off the pool.
    let mut map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &cpu());
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let _ = candle_nn::conv2d(4, 8, 3, cfg, vb.pp("c")).unwrap(); // random weight
    map.set_one("c.bias", randn(&[8], 3)).unwrap();
    let conv = Conv2d::new(vb.pp("c"), 4, 8, 3, cfg).unwrap();
    let x = randn(&[1, 4, 64, 64], 7);
    let here = conv.forward(&x).unwrap();
    let pooled = on_pool(&cpu(), || conv.forward(&x)).unwrap();
    assert!(
        here.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.1
    );
    assert_eq!(rel(&pooled, &here), 0.0);
}
