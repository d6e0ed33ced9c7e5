//! Checkpoints as users have them: PyTorch `.pth` state dicts and safetensors files.
//!
//! A [`Checkpoint`] is a flat map from state-dict names to tensors, normalised the way upstream
//! training code writes them: a `state_dict` / `params` / `params_ema` wrapper is unwrapped and
//! the `module.` prefix of `DataParallel` / `DistributedDataParallel` models is dropped. The
//! format is told by the file's first bytes, never by its extension.
//!
//! Networks are built from a checkpoint through [`Weights`], which checks the shape of every
//! tensor the configuration needs (in module order, so an error names the first mismatching
//! tensor) and that no tensor is left over.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// Keys under which training code nests the state dict (tried in this order).
const WRAPPER_KEYS: [&str; 6] = [
    "state_dict",
    "params_ema",
    "params",
    "model",
    "net",
    "network",
];

/// The on-disk format of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PyTorch's `torch.save` zip archive with a pickled state dict.
    Pth,
    /// The safetensors format.
    Safetensors,
}

/// The named tensors of a checkpoint, on the CPU, in the dtype they were stored in.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    tensors: BTreeMap<String, Tensor>,
    origin: PathBuf,
    format: Format,
}

impl Checkpoint {
    /// Reads a `.pth` or safetensors checkpoint (told apart by content).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is truncated,
    /// corrupt, in PyTorch's legacy (pre-1.6, non-zip) format, or holds no tensors.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_matching(path, |_| true)
    }

    /// Reads the tensors of a checkpoint whose names `keep` accepts (names as [`names`]
    /// gives them, after normalisation). From a `.pth` archive only those tensors' storages
    /// are read, so a network that needs part of a large training checkpoint (DA-CLIP's
    /// encoder without its text tower) does not pay for the rest.
    ///
    /// [`names`]: Self::names
    ///
    /// The result is empty when `keep` accepts none of the file's tensors.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_matching(path: impl AsRef<Path>, keep: impl Fn(&str) -> bool) -> Result<Self> {
        let path = path.as_ref();
        let mut magic = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| read_up_to(&mut f, &mut magic))
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_owned(),
            reason,
        };
        let (tensors, format) = if n >= 4 && magic[..4] == *b"PK\x03\x04" {
            (read_pth(path, &keep).map_err(bad)?, Format::Pth)
        } else if n >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
            return Err(bad(
                "PyTorch's legacy (non-zip) serialization, which cannot be read safely; \
                 re-save it with torch.save(torch.load(f), f) on PyTorch >= 1.6"
                    .into(),
            ));
        } else if n == 8 {
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| bad(format!("not a zip archive and not safetensors: {e}")))?;
            (map.into_iter().collect(), Format::Safetensors)
        } else {
            return Err(bad(format!("the file is only {n} bytes long")));
        };
        if tensors.is_empty() && format == Format::Safetensors {
            return Err(bad("the file holds no tensors".into()));
        }
        let ckpt = Self::normalise(tensors, path.to_owned(), format);
        Ok(match format {
            Format::Pth => ckpt,
            Format::Safetensors => ckpt.retain(&keep),
        })
    }

    /// Wraps tensors that are already in memory (names as in the upstream state dict).
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        Self::normalise(
            tensors.into_iter().collect(),
            PathBuf::from("<tensors>"),
            Format::Safetensors,
        )
    }

    fn normalise(tensors: BTreeMap<String, Tensor>, origin: PathBuf, format: Format) -> Self {
        let all_prefixed = tensors.keys().all(|k| k.starts_with("module."));
        let tensors = if all_prefixed {
            tensors
                .into_iter()
                .map(|(k, v)| (k["module.".len()..].to_owned(), v))
                .collect()
        } else {
            tensors
        };
        Self {
            tensors,
            origin,
            format,
        }
    }

    /// The tensors whose names `keep` accepts (same origin and format).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            origin: self.origin.clone(),
            format: self.format,
        }
    }

    /// The file the checkpoint was read from (`<tensors>` for in-memory ones).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The format it was read in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.dims())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors (never true for a file read by [`load`](Self::load)).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Writes the tensors to a safetensors file, converted to `dtype`; the file appears
    /// complete or not at all (written beside the target, then renamed).
    ///
    /// # Errors
    /// [`Error::Candle`] for a dtype conversion or write failure, [`Error::Io`] for the rename.
    pub fn save_safetensors(&self, path: impl AsRef<Path>, dtype: DType) -> Result<()> {
        let path = path.as_ref();
        let converted = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        let tmp = temp_path(path);
        if let Err(e) = candle_core::safetensors::save(&converted, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// `dir/.name.partial`: the name a file is written under before it is renamed into place.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads the tensors of a `torch.save` zip archive whose (normalised) names `keep` accepts.
///
/// The pickle is parsed by candle's reader; the archive is opened with a known start offset
/// of 0, because the zip crate's offset detection rejects valid archives whose member names
/// have certain lengths (every `torch.save` file whose stem is 21 characters long, seen with
/// zip 9.1–9.8). Every storage member is read once, straight into the buffer its tensors
/// share: tensors that alias one storage (DA-CLIP's `visual.*` and `clip.visual.*`) stay one
/// allocation, as in PyTorch, and `f32`/`f64` storages are not copied after reading.
fn read_pth(
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> std::result::Result<BTreeMap<String, Tensor>, String> {
    use candle_core::pickle::{Object, Stack};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let archive_len = file.metadata().map_err(|e| e.to_string())?.len();
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut zip = zip::ZipArchive::with_config(config, std::io::BufReader::new(file))
        .map_err(|e| format!("invalid zip archive: {e}"))?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or("the archive has no data.pkl (not written by torch.save)")?;
    let dir = PathBuf::from(pkl.strip_suffix(".pkl").unwrap_or(&pkl));
    let object = {
        let member = zip.by_name(&pkl).map_err(|e| e.to_string())?;
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut std::io::BufReader::new(member))
            .map_err(|e| format!("unreadable pickle: {e}"))?;
        stack
            .finalize()
            .map_err(|e| format!("unreadable pickle: {e}"))?
    };
    let Object::Dict(entries) = object else {
        return Err("the pickle is not a dict (save the model's state_dict())".into());
    };
    let is_tensor = |v: &Object| matches!(v, Object::Reduce { .. });
    let entries = if entries.iter().any(|(_, v)| is_tensor(v)) {
        entries
    } else {
        let mut nested = None;
        for key in WRAPPER_KEYS {
            let found = entries.iter().find(|(k, v)| {
                *k == Object::Unicode(key.to_owned()) && matches!(v, Object::Dict(_))
            });
            if let Some((_, Object::Dict(inner))) = found {
                nested = Some(inner.clone());
                break;
            }
        }
        nested.ok_or_else(|| {
            format!("no tensors at the top level nor under any of the keys {WRAPPER_KEYS:?}")
        })?
    };
    let mut infos = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if let Some(info) = value
            .into_tensor_info(name, &dir)
            .map_err(|e| format!("unreadable tensor record: {e}"))?
        {
            infos.push(info);
        }
    }
    if infos.is_empty() {
        return Err("the file holds no tensors".into());
    }
    // `keep` sees the names as `Checkpoint::normalise` will leave them.
    let strip = infos.iter().all(|i| i.name.starts_with("module."));
    let kept = |name: &str| -> bool {
        keep(
            name.strip_prefix("module.")
                .filter(|_| strip)
                .unwrap_or(name),
        )
    };
    let mut storages: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for info in infos.into_iter().filter(|i| kept(&i.name)) {
        let storage = match storages.get(&info.path) {
            Some(s) => s.clone(),
            None => {
                let s = read_pth_storage(&mut zip, archive_len, &info)
                    .map_err(|e| format!("tensor `{}`: {e}", info.name))?;
                storages.insert(info.path.clone(), s.clone());
                s
            }
        };
        let t = view_of(&storage, &info).map_err(|e| format!("tensor `{}`: {e}", info.name))?;
        out.insert(info.name, t);
    }
    Ok(out)
}

/// A storage member of the archive as a one-dimensional tensor of its elements, read into
/// the tensor's own buffer where the dtype allows it.
fn read_pth_storage<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    archive_len: u64,
    info: &candle_core::pickle::TensorInfo,
) -> std::result::Result<Tensor, String> {
    let mut member = zip.by_name(&info.path).map_err(|e| e.to_string())?;
    // `torch.save` stores its members uncompressed: a member cannot be longer than the file
    // (a corrupt directory entry must not become a huge allocation).
    if member.size() > archive_len {
        return Err(format!(
            "truncated storage: {} bytes declared in a {archive_len}-byte file",
            member.size()
        ));
    }
    let width = info.dtype.size_in_bytes();
    let len = usize::try_from(member.size()).map_err(|e| e.to_string())? / width;
    fn typed<T: bytemuck::Pod + candle_core::WithDType>(
        member: &mut impl std::io::Read,
        len: usize,
    ) -> std::result::Result<Tensor, String> {
        let mut values = vec![T::zeroed(); len];
        member
            .read_exact(bytemuck::cast_slice_mut(&mut values))
            .map_err(|e| format!("truncated storage: {e}"))?;
        Tensor::from_vec(values, len, &Device::Cpu).map_err(|e| e.to_string())
    }
    match info.dtype {
        DType::F32 => typed::<f32>(&mut member, len),
        DType::F64 => typed::<f64>(&mut member, len),
        dtype => {
            let mut bytes = vec![0u8; len * width];
            member
                .read_exact(&mut bytes)
                .map_err(|e| format!("truncated storage: {e}"))?;
            Tensor::from_raw_buffer(&bytes, dtype, &[len], &Device::Cpu).map_err(|e| e.to_string())
        }
    }
}

/// The tensor `info` records, as a view of its storage with its shape and strides.
fn view_of(
    storage: &Tensor,
    info: &candle_core::pickle::TensorInfo,
) -> std::result::Result<Tensor, String> {
    let layout = &info.layout;
    let fortran = layout.is_fortran_contiguous() && !layout.is_contiguous();
    if !layout.is_contiguous() && !fortran {
        return Err(format!("strided storage {layout:?} is not supported"));
    }
    let dims = layout.dims();
    let count: usize = dims.iter().product();
    // candle's pickle reader records the storage offset in bytes.
    let start = layout.start_offset() / info.dtype.size_in_bytes();
    if start + count > storage.elem_count() {
        return Err(format!(
            "truncated storage: elements {start}..{} of {}",
            start + count,
            storage.elem_count()
        ));
    }
    let read_dims: Vec<usize> = if fortran {
        dims.iter().rev().copied().collect()
    } else {
        dims.to_vec()
    };
    let t = storage
        .narrow(0, start, count)
        .and_then(|t| t.reshape(read_dims))
        .map_err(|e| e.to_string())?;
    if fortran {
        let rev: Vec<usize> = (0..dims.len()).rev().collect();
        return t.permute(rev).map_err(|e| e.to_string());
    }
    Ok(t)
}

/// Where a network's parameters come from while it is built.
enum Source<'a> {
    Checkpoint(&'a Checkpoint),
    /// A checkpoint the builder owns: each tensor leaves it when taken, so a layer that keeps
    /// a transformed copy (a transposed weight) frees the original as soon as it is built,
    /// and what is left at the end is what no layer used.
    Owned(RefCell<BTreeMap<String, Tensor>>),
    /// Random weights of the right shapes (parameter counts, benchmarks).
    Random,
}

/// The builder's view of a checkpoint: shape-checked, usage-tracked tensor access.
pub(crate) struct Weights<'a> {
    source: Source<'a>,
    device: Device,
    dtype: DType,
    config: String,
    used: RefCell<BTreeSet<String>>,
    params: Cell<usize>,
}

impl<'a> Weights<'a> {
    fn with_source(source: Source<'a>, device: &Device, dtype: DType, config: String) -> Self {
        Self {
            source,
            device: device.clone(),
            dtype,
            config,
            used: RefCell::new(BTreeSet::new()),
            params: Cell::new(0),
        }
    }

    pub(crate) fn new(ckpt: &'a Checkpoint, device: &Device, dtype: DType, config: String) -> Self {
        Self::with_source(Source::Checkpoint(ckpt), device, dtype, config)
    }

    /// As [`new`](Self::new) with the checkpoint handed over: its tensors are dropped as the
    /// layers take them (a network that stores transposed weights then never holds both
    /// copies of all of them at once).
    pub(crate) fn owned(
        ckpt: Checkpoint,
        device: &Device,
        dtype: DType,
        config: String,
    ) -> Weights<'static> {
        Weights::with_source(
            Source::Owned(RefCell::new(ckpt.tensors)),
            device,
            dtype,
            config,
        )
    }

    pub(crate) fn random(device: &Device, dtype: DType, config: String) -> Weights<'static> {
        Weights::with_source(Source::Random, device, dtype, config)
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The tensor `name`, which must have `shape`, on the target device and dtype.
    pub(crate) fn take(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.params
            .set(self.params.get() + shape.iter().product::<usize>());
        self.used.borrow_mut().insert(name.to_owned());
        let missing = || Error::MissingTensor {
            name: name.to_owned(),
            config: self.config.clone(),
        };
        let t = match &self.source {
            Source::Checkpoint(ckpt) => ckpt.get(name).ok_or_else(missing)?.clone(),
            Source::Owned(tensors) => tensors.borrow_mut().remove(name).ok_or_else(missing)?,
            Source::Random => {
                // Drawn on the host from a generator seeded by the tensor's name, then moved:
                // the same configuration gets the same weights on every device and in every
                // run (so a GPU forward can be compared with the CPU's).
                let n: usize = shape.iter().product();
                let per_channel = shape.len() == 4 && shape[0] == 1;
                let values: Vec<f32> = if name.ends_with(".g") {
                    vec![1.0; n]
                } else {
                    let scale = if shape.len() >= 2 && !per_channel {
                        1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt()
                    } else {
                        0.1
                    };
                    let mut rng = StdRng::seed_from_u64(fnv1a(name.as_bytes()));
                    (0..n)
                        .map(|_| {
                            scale
                                * <StandardNormal as Distribution<f32>>::sample(
                                    &StandardNormal,
                                    &mut rng,
                                )
                        })
                        .collect()
                };
                return Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
                    .to_dtype(self.dtype)?
                    .to_device(&self.device)?);
            }
        };
        if t.dims() != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_owned(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
                config: self.config.clone(),
            });
        }
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Checks that every tensor of the checkpoint was used; returns the parameter count.
    pub(crate) fn finish(self) -> Result<usize> {
        self.finish_where(|_| true)
    }

    /// Checks that every tensor of the checkpoint for which `owned` holds was used (the
    /// checkpoint may hold other models' parts); returns the parameter count.
    pub(crate) fn finish_where(self, owned: impl Fn(&str) -> bool) -> Result<usize> {
        let used = self.used.borrow();
        let unused = match &self.source {
            Source::Checkpoint(ckpt) => ckpt
                .names()
                .find(|n| owned(n) && !used.contains(*n))
                .map(str::to_owned),
            // What is left was never taken.
            Source::Owned(tensors) => tensors.borrow().keys().find(|n| owned(n)).cloned(),
            Source::Random => None,
        };
        if let Some(name) = unused {
            return Err(Error::UnexpectedTensor {
                name,
                config: self.config.clone(),
            });
        }
        Ok(self.params.get())
    }
}

/// FNV-1a of `bytes` (the seed of a random tensor, from its name).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
