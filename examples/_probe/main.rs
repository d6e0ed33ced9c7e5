#[path = "../restore/net.rs"]
mod net;
use candle_core::{Device, Tensor};
fn main() {
    let d = Device::Cpu;
    let m = net::RestoreNet::load(std::path::Path::new("assets/restore/model.safetensors"), &d).unwrap();
    for s in [64usize, 128] {
        let x = Tensor::rand(0f32, 1f32, (1, 3, s, s), &d).unwrap();
        let t = Tensor::new(&[50f32], &d).unwrap();
        let _ = m.forward(&x, &x, &t).unwrap();
        let st = std::time::Instant::now();
        for _ in 0..5 { let _ = m.forward(&x, &x, &t).unwrap(); }
        println!("{s}: {:.1} ms/forward", st.elapsed().as_secs_f64() * 200.0);
    }
}
