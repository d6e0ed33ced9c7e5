//! The element types of the ndarray backend, below the kernels, the noise and the backend
//! that use them.

use num_traits::{Float, FromPrimitive, ToPrimitive};

/// Element types of the ndarray backend (`f32`, `f64`). Sealed: the trait is public only
/// inside this private module, so no other crate can name or implement it.
pub trait NdElement:
    Float + FromPrimitive + ToPrimitive + Send + Sync + std::fmt::Debug + 'static
{
    /// The element type's name.
    const NAME: &'static str;
    /// Rounds an `f64` to this type.
    fn from_f64_lossy(v: f64) -> Self;
    /// Widens to `f64`.
    fn widen(self) -> f64;
    /// Writes the Philox normals of blocks `first_block, first_block + 1, …` (four per block)
    /// into `out` (see [`PhiloxNoise`](crate::PhiloxNoise) for the layout).
    fn fill_normals(out: &mut [Self], first_block: u32, stream: u32, draw: u32, key: [u32; 2]);
}

impl NdElement for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn widen(self) -> f64 {
        self as f64
    }
    fn fill_normals(out: &mut [Self], first_block: u32, stream: u32, draw: u32, key: [u32; 2]) {
        super::normal::fill_f32(out, first_block, stream, draw, key)
    }
}

impl NdElement for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v
    }
    #[inline]
    fn widen(self) -> f64 {
        self
    }
    fn fill_normals(out: &mut [Self], first_block: u32, stream: u32, draw: u32, key: [u32; 2]) {
        super::normal::fill_f64(out, first_block, stream, draw, key)
    }
}
