//! Networks exported to ONNX, run by ONNX Runtime (the `onnx` feature).
//!
//! ONNX Runtime is not linked: its shared library is loaded when the first [`OnnxNetwork`] is
//! created, from [`OnnxOptions::runtime`] or the `ORT_DYLIB_PATH` environment variable (the
//! three ways to get the library are in `docs/models.md`). Building with the feature needs
//! nothing installed.
//!
//! The graph's inputs are matched to the roles of a score model's call by name (`x_t`, `mu`,
//! `t`, and for DA-CLIP-style networks `image_context`, `degra_context`; common aliases are
//! accepted, see [`OnnxNetwork::load`]) or, when the names say nothing, by position in that
//! order. Everything that can be checked before the first call is checked when loading: the
//! ranks and element types of every input and of the output, and which axes are fixed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use mrsampler::{FitTarget, ModelError, ScoreModel};
use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::value::{DynTensor, TensorElementType, ValueType};

use crate::error::{Error, Result};

/// Where an ONNX network runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OnnxDevice {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `N` (needs a runtime built with it, e.g. the
    /// `onnxruntime-gpu` wheel's library).
    Cuda(usize),
}

/// How to load an ONNX network.
#[derive(Clone, Debug)]
pub struct OnnxOptions {
    /// The ONNX Runtime shared library (`libonnxruntime.so`, `onnxruntime.dll`,
    /// `libonnxruntime.dylib`); `None`: the `ORT_DYLIB_PATH` environment variable.
    pub runtime: Option<PathBuf>,
    /// What the network predicts (ONNX graphs do not say): default [`FitTarget::Noise`], as
    /// IR-SDE, Refusion and DA-CLIP networks are trained.
    pub fit_target: FitTarget,
    /// Threads of one network call (`None`: ONNX Runtime's default, one per core).
    pub threads: Option<usize>,
    /// The execution provider.
    pub device: OnnxDevice,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            runtime: None,
            fit_target: FitTarget::Noise,
            threads: None,
            device: OnnxDevice::Cpu,
        }
    }
}

/// What an input of the graph is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    State,
    Mu,
    Time,
    ImageContext,
    DegraContext,
}

impl Role {
    const ORDER: [Role; 5] = [
        Role::State,
        Role::Mu,
        Role::Time,
        Role::ImageContext,
        Role::DegraContext,
    ];

    /// Names (lower case, `_`/`-` removed) that mean this role.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Role::State => &["xt", "x", "state", "noisy", "input", "sample"],
            Role::Mu => &["mu", "cond", "condition", "lq", "degraded", "lowquality"],
            Role::Time => &["t", "time", "times", "timestep", "timesteps"],
            Role::ImageContext => &["imagecontext", "imgcontext", "textcontext", "context"],
            Role::DegraContext => &["degracontext", "degradationcontext"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Role::State => "x_t",
            Role::Mu => "mu",
            Role::Time => "t",
            Role::ImageContext => "image_context",
            Role::DegraContext => "degra_context",
        }
    }

    fn of_name(name: &str) -> Option<Role> {
        let key: String = name
            .chars()
            .filter(|c| *c != '_' && *c != '-' && *c != '.')
            .flat_map(char::to_lowercase)
            .collect();
        Role::ORDER
            .into_iter()
            .find(|r| r.aliases().contains(&key.as_str()))
    }
}

/// One graph input, with its role and declared type.
#[derive(Clone, Debug)]
struct Slot {
    name: String,
    role: Role,
    element: TensorElementType,
    /// Declared dimensions; `-1` where the axis is dynamic.
    dims: Vec<i64>,
}

/// A network exported to ONNX, as a [`ScoreModel`] over candle tensors on any device (they are
/// read to the host for ONNX Runtime and its output is put back on the input's device).
pub struct OnnxNetwork {
    session: Session,
    path: PathBuf,
    inputs: Vec<Slot>,
    output: String,
    output_dims: Vec<i64>,
    fit: FitTarget,
    /// The image and degradation contexts, read to the host once per `set_contexts`:
    /// `(rows, values)`, each row `values.len() / rows` wide.
    contexts: Option<[(usize, Vec<f32>); 2]>,
}

impl std::fmt::Debug for OnnxNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxNetwork")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// The process's ONNX Runtime: loaded once, from one library (a failed attempt is not
/// remembered, so a later call may give a working path).
static RUNTIME: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

const HOW_TO_GET: &str = "get the library one of three ways: `pip install onnxruntime` (it is \
    `site-packages/onnxruntime/capi/libonnxruntime.so.*`), a system package (e.g. Debian's \
    `libonnxruntime-dev`), or an `onnxruntime-*.tgz` release archive from ONNX Runtime's \
    GitHub releases (`lib/libonnxruntime.so`); then give its path in `OnnxOptions::runtime` \
    or set ORT_DYLIB_PATH (docs/models.md)";

fn runtime(requested: Option<&Path>) -> Result<&'static Environment> {
    let _guard = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = RUNTIME.get() {
        return match requested {
            Some(p) if p != path => Err(Error::OnnxRuntime {
                reason: format!(
                    "ONNX Runtime is already loaded from {} in this process; cannot load {} too",
                    path.display(),
                    p.display()
                ),
            }),
            _ => Ok(env),
        };
    }
    let fail = |reason: String| Error::OnnxRuntime { reason };
    let path = match requested {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) => PathBuf::from(p),
            None => {
                return Err(fail(format!(
                    "no ONNX Runtime library was given (ORT_DYLIB_PATH is not set); {HOW_TO_GET}"
                )));
            }
        },
    };
    if !path.is_file() {
        return Err(fail(format!(
            "the ONNX Runtime library {} does not exist; {HOW_TO_GET}",
            path.display()
        )));
    }
    let env = ort::init_from(&path)
        .map_err(|e| {
            fail(format!(
                "cannot load the ONNX Runtime library {} ({e}); it must be ONNX Runtime 1.22 or \
                 newer for this platform; {HOW_TO_GET}",
                path.display()
            ))
        })?
        .with_name("mrsampler")
        .build()
        .map_err(|e| {
            fail(format!(
                "ONNX Runtime ({}) failed to start: {e}",
                path.display()
            ))
        })?;
    Ok(&RUNTIME.get_or_init(|| (path, env)).1)
}

fn model_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::OnnxModel {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn is_float(e: TensorElementType) -> bool {
    matches!(e, TensorElementType::Float32)
}

fn dims_text(dims: &[i64]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", d.join(", "))
}

impl OnnxNetwork {
    /// Loads the graph at `path` and checks its inputs and output.
    ///
    /// Inputs are matched by name (case, `_` and `-` ignored): the state `x_t` (also `x`,
    /// `xt`, `state`, `noisy`, `input`, `sample`), the condition `mu` (also `cond`,
    /// `condition`, `lq`, `degraded`), the time `t` (also `time`, `timestep(s)`), and the
    /// optional contexts `image_context` (also `context`) and `degra_context`. If any name is
    /// unknown, the inputs are taken by position in that order. The state and `mu` must be
    /// rank-4 float32 `[B, C, H, W]`; `t` a float32, float64, int32 or int64 scalar or `[B]`
    /// (integer times are rounded); contexts rank-2 float32 `[B, D]`; the first output
    /// rank-4 float32, the state's shape.
    ///
    /// # Errors
    /// [`Error::OnnxRuntime`] if the runtime library cannot be loaded, [`Error::OnnxModel`] if
    /// the file is not a loadable ONNX model or its inputs or output do not fit.
    pub fn load(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let env = runtime(options.runtime.as_deref())?;
        let fail = |what: &str, e: ort::Error| model_error(path, format!("{what}: {e}"));
        let mut builder = Session::builder(env).map_err(|e| fail("session", e))?;
        if let Some(n) = options.threads {
            builder = builder
                .with_intra_threads(n)
                .map_err(|e| fail("threads", e.into()))?;
        }
        if let OnnxDevice::Cuda(id) = options.device {
            let cuda = ep::CUDA::default()
                .with_device_id(id as i32)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| Error::OnnxRuntime {
                    reason: format!(
                        "the loaded ONNX Runtime cannot run on cuda:{id} ({e}); use a runtime \
                         built with CUDA (e.g. the `onnxruntime-gpu` wheel's library) or \
                         the CPU provider"
                    ),
                })?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| model_error(path, format!("ONNX Runtime cannot load it ({e})")))?;
        let (inputs, output, output_dims) = Self::check_graph(path, &session)?;
        Ok(Self {
            session,
            path: path.to_path_buf(),
            inputs,
            output,
            output_dims,
            fit: options.fit_target,
            contexts: None,
        })
    }

    fn check_graph(path: &Path, session: &Session) -> Result<(Vec<Slot>, String, Vec<i64>)> {
        let described: Vec<String> = session
            .inputs()
            .iter()
            .map(|o| format!("{} {}", o.name(), o.dtype()))
            .collect();
        let listing = described.join(", ");
        let mut raw = Vec::new();
        for o in session.inputs() {
            match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    raw.push((o.name().to_owned(), *ty, shape.to_vec()))
                }
                other => {
                    return Err(model_error(
                        path,
                        format!("input `{}` is a {other}, not a tensor", o.name()),
                    ));
                }
            }
        }
        let by_name: Option<Vec<Role>> = raw.iter().map(|(n, ..)| Role::of_name(n)).collect();
        let roles: Vec<Role> = match by_name {
            Some(r) => r,
            None if raw.len() == 3 || raw.len() == 5 => Role::ORDER[..raw.len()].to_vec(),
            None => {
                return Err(model_error(
                    path,
                    format!(
                        "cannot tell its inputs' roles: it has {} ({listing}); name them x_t, \
                         mu, t (and image_context, degra_context for a network that takes \
                         contexts) when exporting, or export exactly 3 (or 5) inputs in that \
                         order",
                        raw.len()
                    ),
                ));
            }
        };
        for role in Role::ORDER {
            let n = roles.iter().filter(|r| **r == role).count();
            let required = matches!(role, Role::State | Role::Mu | Role::Time);
            if n > 1 || (required && n == 0) {
                return Err(model_error(
                    path,
                    format!(
                        "{} input `{}` ({listing}); a score network takes x_t, mu and t",
                        if n > 1 { "more than one" } else { "no" },
                        role.label()
                    ),
                ));
            }
        }
        let has = |r: Role| roles.contains(&r);
        if has(Role::ImageContext) != has(Role::DegraContext) {
            return Err(model_error(
                path,
                format!(
                    "it takes one context but not the other ({listing}); DA-CLIP-style networks take both image_context and degra_context"
                ),
            ));
        }
        let mut slots = Vec::new();
        for ((name, element, dims), role) in raw.into_iter().zip(roles) {
            let (rank_ok, type_ok, want) = match role {
                Role::State | Role::Mu => (
                    dims.len() == 4,
                    is_float(element),
                    "rank-4 float32 [B, C, H, W]",
                ),
                Role::Time => (
                    dims.len() <= 1,
                    matches!(
                        element,
                        TensorElementType::Float32
                            | TensorElementType::Float64
                            | TensorElementType::Int32
                            | TensorElementType::Int64
                    ),
                    "a float or integer scalar or [B]",
                ),
                Role::ImageContext | Role::DegraContext => {
                    (dims.len() == 2, is_float(element), "rank-2 float32 [B, D]")
                }
            };
            if !rank_ok || !type_ok {
                return Err(model_error(
                    path,
                    format!(
                        "input `{name}` (taken as {}) is {element} {}; it must be {want}",
                        role.label(),
                        dims_text(&dims)
                    ),
                ));
            }
            slots.push(Slot {
                name,
                role,
                element,
                dims,
            });
        }
        let out = session
            .outputs()
            .first()
            .ok_or_else(|| model_error(path, "it has no output"))?;
        let output_dims = match out.dtype() {
            ValueType::Tensor { ty, shape, .. } if shape.len() == 4 && is_float(*ty) => {
                shape.to_vec()
            }
            other => {
                return Err(model_error(
                    path,
                    format!(
                        "its first output `{}` is {other}; it must be a rank-4 float32 tensor \
                         (the prediction, shaped like x_t)",
                        out.name()
                    ),
                ));
            }
        };
        Ok((slots, out.name().to_owned(), output_dims))
    }

    /// The file the network was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the graph takes DA-CLIP-style contexts (`image_context`, `degra_context`);
    /// then [`set_contexts`](Self::set_contexts) must be called before predicting.
    pub fn takes_contexts(&self) -> bool {
        self.inputs.iter().any(|s| s.role == Role::ImageContext)
    }

    /// The fixed image size `(H, W)` the graph declares, if its spatial axes are not dynamic.
    pub fn fixed_size(&self) -> Option<(usize, usize)> {
        let s = self.inputs.iter().find(|s| s.role == Role::State)?;
        match (s.dims[2], s.dims[3]) {
            (h, w) if h > 0 && w > 0 => Some((h as usize, w as usize)),
            _ => None,
        }
    }

    /// The image channels the graph declares (`None` if dynamic).
    pub fn channels(&self) -> Option<usize> {
        let s = self.inputs.iter().find(|s| s.role == Role::State)?;
        usize::try_from(s.dims[1]).ok()
    }

    /// One line per input and the output: name, role, element type, dimensions (`?` where
    /// dynamic).
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .inputs
            .iter()
            .map(|s| {
                format!(
                    "input  {:<16} {:<13} {} {}",
                    s.name,
                    s.role.label(),
                    s.element,
                    dims_text(&s.dims)
                )
            })
            .collect();
        lines.push(format!(
            "output {:<16} {:<13} {} {}",
            self.output,
            "prediction",
            TensorElementType::Float32,
            dims_text(&self.output_dims)
        ));
        lines.join("\n")
    }

    /// Sets the contexts passed with every call (`[1, D]` or `[B, D]` each), for graphs that
    /// take them; compute them per image (e.g. with `DaClipEncoder::contexts`).
    ///
    /// # Errors
    /// [`Error::OnnxModel`] if the graph takes no contexts or a context is not rank 2.
    pub fn set_contexts(&mut self, image: &Tensor, degradation: &Tensor) -> Result<()> {
        if !self.takes_contexts() {
            return Err(model_error(&self.path, "it takes no contexts"));
        }
        for (what, t) in [("image", image), ("degradation", degradation)] {
            if t.rank() != 2 {
                return Err(model_error(
                    &self.path,
                    format!("the {what} context must be [B, D], not {:?}", t.dims()),
                ));
            }
        }
        let host = |t: &Tensor| -> Result<(usize, Vec<f32>)> {
            let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            Ok((t.dim(0)?, t.flatten_all()?.to_vec1::<f32>()?))
        };
        self.contexts = Some([host(image)?, host(degradation)?]);
        Ok(())
    }

    /// Checks the call's shapes against the graph's fixed axes.
    fn check_call(&self, dims: &[usize]) -> Result<()> {
        let [_, c, h, w] = dims else {
            return Err(model_error(
                &self.path,
                format!("the state must be [B, C, H, W], not {dims:?}"),
            ));
        };
        if let Some(fc) = self.channels()
            && fc != *c
        {
            return Err(model_error(
                &self.path,
                format!("it takes {fc}-channel images; this one has {c} channels"),
            ));
        }
        if let Some((fh, fw)) = self.fixed_size()
            && (fh, fw) != (*h, *w)
        {
            let hint = if *h > fh || *w > fw {
                format!(
                    "evaluate it on tiles of its size (`Tiled` with a `TileSpec` of size {}, \
                     and no mirrored margin, which would grow each tile)",
                    fh.min(fw)
                )
            } else {
                "pad the image to that size".to_owned()
            };
            return Err(model_error(
                &self.path,
                format!(
                    "its graph fixes images at {fh}×{fw} and this one is {h}×{w}; {hint}, or \
                     export it with dynamic height and width axes"
                ),
            ));
        }
        if self.takes_contexts() && self.contexts.is_none() {
            return Err(model_error(
                &self.path,
                "it takes image and degradation contexts and none were set (set_contexts)",
            ));
        }
        Ok(())
    }

    /// The time input for a batch of `b` at time `t`, in the graph's element type and rank.
    fn time_value(slot: &Slot, b: usize, t: f64) -> std::result::Result<DynTensor, ort::Error> {
        let shape: Vec<i64> = if slot.dims.is_empty() {
            vec![]
        } else {
            vec![b as i64]
        };
        let n = if slot.dims.is_empty() { 1 } else { b };
        Ok(match slot.element {
            TensorElementType::Float64 => {
                ort::value::Tensor::from_array((shape, vec![t; n]))?.upcast()
            }
            TensorElementType::Int64 => {
                ort::value::Tensor::from_array((shape, vec![t.round() as i64; n]))?.upcast()
            }
            TensorElementType::Int32 => {
                ort::value::Tensor::from_array((shape, vec![t.round() as i32; n]))?.upcast()
            }
            _ => ort::value::Tensor::from_array((shape, vec![t as f32; n]))?.upcast(),
        })
    }

    /// One call on a batch whose size the graph accepts.
    fn run(&mut self, x: &Tensor, mu: &Tensor, t: f64) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let host = |t: &Tensor| -> Result<(Vec<i64>, Vec<f32>)> {
            let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            let shape = t.dims().iter().map(|&d| d as i64).collect();
            Ok((shape, t.flatten_all()?.to_vec1::<f32>()?))
        };
        let b = dims[0];
        let fail = |e: ort::Error| model_error(&self.path, format!("ONNX Runtime: {e}"));
        let mut feeds: Vec<(String, DynTensor)> = Vec::with_capacity(self.inputs.len());
        for slot in &self.inputs {
            let value = match slot.role {
                Role::State => ort::value::Tensor::from_array(host(x)?)
                    .map_err(fail)?
                    .upcast(),
                Role::Mu => ort::value::Tensor::from_array(host(mu)?)
                    .map_err(fail)?
                    .upcast(),
                Role::Time => Self::time_value(slot, b, t).map_err(fail)?,
                Role::ImageContext | Role::DegraContext => {
                    let contexts = self.contexts.as_ref().ok_or_else(|| {
                        model_error(&self.path, "it takes contexts and none were set")
                    })?;
                    let (rows, values) = &contexts[usize::from(slot.role == Role::DegraContext)];
                    let width = values.len() / rows.max(&1);
                    // One context row serves the whole batch.
                    let (rows, values) = if *rows == 1 && b > 1 {
                        (b, values.repeat(b))
                    } else {
                        (*rows, values.clone())
                    };
                    let c = (vec![rows as i64, width as i64], values);
                    ort::value::Tensor::from_array(c).map_err(fail)?.upcast()
                }
            };
            feeds.push((slot.name.clone(), value));
        }
        let outputs = self.session.run(feeds).map_err(fail)?;
        let (shape, values) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        if shape != dims {
            return Err(model_error(
                &self.path,
                format!(
                    "its output is {shape:?} for an input of {dims:?}; it must be the input's shape"
                ),
            ));
        }
        Ok(Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)?)
    }
}

impl ScoreModel<Tensor> for OnnxNetwork {
    fn fit_target(&self) -> FitTarget {
        self.fit
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, ModelError> {
        self.check_call(x.dims())?;
        let fixed_batch = self
            .inputs
            .iter()
            .find(|s| s.role == Role::State)
            .is_some_and(|s| s.dims[0] > 0);
        let y = if fixed_batch && x.dim(0)? > 1 {
            // A graph exported with batch 1: one call per image.
            let parts = (0..x.dim(0)?)
                .map(|i| self.run(&x.narrow(0, i, 1)?, &mu.narrow(0, i, 1)?, t))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        } else {
            self.run(x, mu, t)?
        };
        Ok(y.to_dtype(x.dtype())?.to_device(x.device())?)
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}
