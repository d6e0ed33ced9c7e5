//! `.npy` arrays of the porting checks (`net`, `encode`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Reads a `[B, C, H, W]` or `[C, H, W]` array; returns it 4-D and whether it was 3-D.
pub fn read_image_npy(path: &Path, device: &Device) -> Result<(Tensor, bool)> {
    let t = Tensor::read_npy(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (t, three_d) = match t.rank() {
        4 => (t, false),
        3 => (t.unsqueeze(0)?, true),
        r => {
            return Err(format!(
                "{}: expected a [B, C, H, W] or [C, H, W] array, got rank {r} {:?}",
                path.display(),
                t.dims()
            )
            .into());
        }
    };
    Ok((t.to_device(device)?, three_d))
}

/// Reads a `[B, D]` or `[D]` context array as `[B, D]` float32 on the CPU.
pub fn read_context_npy(path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = match t.rank() {
        2 => t,
        1 => t.unsqueeze(0)?,
        r => {
            return Err(format!(
                "{}: expected a [batch, context_dim] array, got rank {r} {:?}",
                path.display(),
                t.dims()
            )
            .into());
        }
    };
    Ok(t.to_dtype(DType::F32)?)
}
