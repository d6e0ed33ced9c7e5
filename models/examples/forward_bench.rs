//! Forward time and peak memory of the released network configurations on the CPU.
//!
//! ```text
//! cargo run --release -p mrsampler-models --example forward_bench -- ARCH SIZE [REPEATS]
//! cargo run --release -p mrsampler-models --example forward_bench -- depthwise
//! cargo run --release -p mrsampler-models --example forward_bench -- attention
//! cargo run --release -p mrsampler-models --example forward_bench -- product
//! ORT_DYLIB_PATH=… cargo run --release -p mrsampler-models --features onnx --example forward_bench -- \
//!     onnx NET.onnx SIZE [REPEATS] [THREADS]
//! ```
//!
//! `ARCH` is `unet` (IR-SDE, nf 64, depth 4), `unet-deshadow` (nf 32, depth 5), `nafnet`
//! (Refusion, width 64, [1, 1, 1, 28]), `daclip` (DA-CLIP's denoiser, nf 64, [1, 2, 4, 8],
//! contexts 512; the row also gives the once-per-image context work) or `daclip-encoder`
//! (DA-CLIP's ViT-B/32 encoder with its controller on 224² pixels, plus the preprocessing of a
//! `SIZE²` image); the network gets random weights and one `[1, 3, SIZE, SIZE]` input.
//! Prints one row: the median of `REPEATS` forwards (after one warm-up) and the process's peak
//! resident memory. Run one configuration per process so that the peak belongs to it;
//! `tools/torch_forward_bench.py` prints the same row for the upstream PyTorch module.
//! `depthwise` times NAFNet's depthwise 3 × 3 convolution at the shapes of the released
//! configuration, candle's grouped convolution against this crate's kernel. `attention` times
//! the attention over pixels of DA-CLIP's spatial transformers at 256² and 512² (16 heads of 32
//! over 1 024 and 4 096 tokens), this crate's `layers::attention` against the same from
//! candle's operations (two products and `candle_nn`'s softmax). `product` times candle's CPU
//! matrix product (the `gemm` crate) on the shape of a 3 × 3 convolution 192 → 128 channels at
//! 128² in im2col form, `[128, 1728] · [1728, 16384]`, in GFLOPS. `onnx` times an exported
//! network (`tools/export_onnx.py`) through `OnnxNetwork` (ONNX Runtime's CPU provider,
//! `THREADS` intra-op threads, default 2), random contexts of
//! width 512 if its graph takes them.

use std::time::Instant;

/// The process setup of the `mrsampler` tool, whose forward this measures.
#[path = "support/process.rs"]
mod process;

use candle_core::{DType, Device, Tensor};
use mrsampler_models::{
    ClipVisionConfig, ConditionalUNet, DaClipEncoder, NafNetConfig, Network, NetworkConfig,
    UNetConfig,
};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<F: FnMut() -> candle_core::Result<Tensor>>(repeats: usize, mut f: F) -> f64 {
    f().unwrap();
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                f().unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn depthwise() {
    println!("| shape | candle grouped conv (ms) | depthwise kernel (ms) | speed-up |");
    println!("|---|---|---|---|");
    // NAFNet width 64: the depthwise layer has 2·c channels at every level.
    for (c, s) in [(128, 256), (256, 128), (512, 64), (1024, 32), (128, 512)] {
        let x = Tensor::randn(0f32, 1f32, (1, c, s, s), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1f32, (c, 1, 3, 3), &Device::Cpu).unwrap();
        let grouped = time(5, || x.conv2d(&w, 1, 1, 1, c));
        let fast = time(5, || {
            mrsampler_models::depthwise_conv3x3(&x, &w, None).map_err(candle_core::Error::wrap)
        });
        println!(
            "| 1×{c}×{s}×{s} | {:.1} | {:.2} | {:.0}× |",
            grouped * 1e3,
            fast * 1e3,
            grouped / fast
        );
    }
}

/// The pixel attention of DA-CLIP's spatial transformers, this crate's against candle's
/// composition (median of 5 after one warm-up).
fn attention() {
    println!("| tokens | candle: products and softmax (ms) | layers::attention (ms) | speed-up |");
    println!("|---|---|---|---|");
    let scale = 32f64.powf(-0.5);
    for n in [1024, 4096] {
        let qkv: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn(0f32, 1f32, (1, 16, n, 32), &Device::Cpu).unwrap())
            .collect();
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        let composed = time(5, || {
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
        });
        let fast = time(5, || mrsampler_models::layers::attention(q, k, v, scale));
        println!(
            "| {n} | {:.1} | {:.1} | {:.1}× |",
            composed * 1e3,
            fast * 1e3,
            composed / fast
        );
    }
}

/// GFLOPS of candle's CPU matrix product `[M, K] · [K, N]` (median of 9); by default a
/// convolution-shaped product.
fn product(dims: &[String]) {
    let dim =
        |i: usize, default: usize| dims.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (m, k, n) = (dim(0, 128), dim(1, 1728), dim(2, 16384));
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).expect("a");
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).expect("b");
    let _ = a.matmul(&b).expect("warm-up");
    let mut times: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            let c = a.matmul(&b).expect("product");
            drop(c);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let flops = 2.0 * (m * k * n) as f64;
    println!(
        "| candle matmul | [{m}, {k}] · [{k}, {n}] | {:.2} ms | {:.0} GFLOPS |",
        times[4] * 1e3,
        flops / times[4] / 1e9
    );
}

fn main() {
    process::configure_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("depthwise") {
        depthwise();
        return;
    }
    if args.first().map(String::as_str) == Some("attention") {
        attention();
        return;
    }
    if args.first().map(String::as_str) == Some("product") {
        product(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("onnx") {
        return onnx(&args[1..]);
    }
    let usage = "usage: forward_bench unet|unet-deshadow|nafnet|daclip|daclip-encoder SIZE \
                 [REPEATS] | depthwise | attention | product [M K N]";
    let (arch, size) = match (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
    ) {
        (Some(a), Some(s)) => (a.as_str(), s),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let repeats = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    match arch {
        "daclip" => return daclip(size, repeats),
        "daclip-encoder" => return daclip_encoder(size, repeats),
        _ => {}
    }
    let config = match arch {
        "unet" => NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 64, 4)),
        "unet-deshadow" => NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 32, 5)),
        "nafnet" => NetworkConfig::NafNet(NafNetConfig::refusion()),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let net = Network::random(config, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let mu = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let secs = time(repeats, || {
        net.forward(&x, &mu, &[50.0])
            .map_err(candle_core::Error::wrap)
    });
    println!(
        "| candle | {arch} | {size}² | {:.3} | {:.0} |",
        secs,
        peak_rss_mib()
    );
}

fn wrap<T>(r: mrsampler_models::Result<T>) -> candle_core::Result<T> {
    r.map_err(candle_core::Error::wrap)
}

/// DA-CLIP's denoiser: the forward with the contexts' work done, and that work itself.
fn daclip(size: usize, repeats: usize) {
    let config = UNetConfig::daclip(3, 3, 64, &[1, 2, 4, 8], 512, true, true);
    let net = ConditionalUNet::random(config, &Device::Cpu, DType::F32).unwrap();
    let ic = Tensor::randn(0f32, 1f32, (1, 512), &Device::Cpu).unwrap();
    let dc = Tensor::randn(0f32, 1f32, (1, 512), &Device::Cpu).unwrap();
    let per_image = time(repeats.max(5), || {
        wrap(net.condition(Some(&ic), Some(&dc))).map(|_| ic.clone())
    });
    let cond = net.condition(Some(&ic), Some(&dc)).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let mu = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let secs = time(repeats, || {
        wrap(net.forward_conditioned(&x, &mu, &[50.0], &cond))
    });
    println!(
        "| candle | daclip | {size}² | {secs:.3} | {:.0} | contexts once per image: {:.2} ms |",
        peak_rss_mib(),
        per_image * 1e3
    );
}

/// DA-CLIP's encoder on 224² pixels, and the preprocessing of a `size²` image.
fn daclip_encoder(size: usize, repeats: usize) {
    let enc =
        DaClipEncoder::random(ClipVisionConfig::vit_b_32(), &Device::Cpu, DType::F32).unwrap();
    let pixels = Tensor::randn(0f32, 1f32, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let secs = time(repeats, || wrap(enc.encode(&pixels)).map(|c| c.image));
    let image = Tensor::rand(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let pre = time(repeats, || wrap(enc.preprocess(&image)));
    println!(
        "| candle | daclip-encoder | 224² (preprocess {size}²: {:.1} ms) | {secs:.3} | {:.0} |",
        pre * 1e3,
        peak_rss_mib()
    );
}

#[cfg(feature = "onnx")]
fn onnx(args: &[String]) {
    use mrsampler::ScoreModel;
    use mrsampler_models::{OnnxNetwork, OnnxOptions};
    let usage = "usage: forward_bench onnx NET.onnx SIZE [REPEATS] [THREADS]";
    let (Some(path), Some(size)) = (args.first(), args.get(1).and_then(|s| s.parse().ok())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let repeats = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let threads = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut net = OnnxNetwork::load(
        path,
        &OnnxOptions {
            threads: Some(threads),
            ..OnnxOptions::default()
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    if net.takes_contexts() {
        let c = Tensor::randn(0f32, 1f32, (1, 512), &Device::Cpu).unwrap();
        net.set_contexts(&c, &c).unwrap();
    }
    let x = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let mu = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let secs = time(repeats, || {
        net.predict(&x, &mu, 50.0).map_err(candle_core::Error::wrap)
    });
    println!(
        "| ONNX Runtime ({threads} threads) | {path} | {size}² | {secs:.3} | {:.0} |",
        peak_rss_mib()
    );
}

#[cfg(not(feature = "onnx"))]
fn onnx(_: &[String]) {
    eprintln!("forward_bench onnx: build with --features onnx");
    std::process::exit(2);
}
