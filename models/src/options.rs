//! Upstream option files (the IR-SDE code base's YAML): the `network_G` and `sde` sections.
//!
//! Only the keys that decide the network and the schedule are read; everything else in the
//! file (datasets, paths, training settings) is ignored.

use std::path::{Path, PathBuf};

use mrsampler::schedule::{IrSdeSchedule, ThetaSchedule};
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result};
use crate::nafnet::NafNetConfig;

/// The network section (`network_G`): which architecture and its constructor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkOptions {
    /// `which_model_G: ConditionalUNet`.
    UNet {
        /// `in_nc`.
        in_nc: usize,
        /// `out_nc`.
        out_nc: usize,
        /// `nf`.
        nf: usize,
        /// `depth` (default 4), as channel multipliers `[2, 4, …, 2^depth]`, or `ch_mult`.
        channel_mults: Vec<usize>,
    },
    /// `which_model_G: ConditionalNAFNet`.
    NafNet(NafNetConfig),
}

impl NetworkOptions {
    /// The upstream class name.
    pub fn class_name(&self) -> &'static str {
        match self {
            Self::UNet { .. } => "ConditionalUNet",
            Self::NafNet(_) => "ConditionalNAFNet",
        }
    }
}

/// The `sde` section: the schedule the network was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct SdeOptions {
    /// `max_sigma` (values ≥ 1 are divided by 255).
    pub max_sigma: f64,
    /// `T`.
    pub steps: usize,
    /// `schedule` (`cosine` when absent, as upstream's `IRSDE` default).
    pub theta: ThetaSchedule,
    /// `eps` (0.01 when absent, as upstream's `IRSDE` default).
    pub eps: f64,
}

impl SdeOptions {
    /// The schedule these options describe.
    ///
    /// # Errors
    /// [`Error::Sampler`] for out-of-range values.
    pub fn schedule(&self) -> Result<IrSdeSchedule> {
        Ok(IrSdeSchedule::new(
            self.theta,
            self.steps,
            self.eps,
            self.max_sigma,
        )?)
    }
}

/// An upstream option file, reduced to what inference needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamOptions {
    /// Where it was read from.
    pub path: PathBuf,
    /// The `network_G` section, if present.
    pub network: Option<NetworkOptions>,
    /// The `sde` section, if present.
    pub sde: Option<SdeOptions>,
}

impl UpstreamOptions {
    /// Reads and parses an option file.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Options`] for invalid YAML, an unsupported `which_model_G` or
    /// a missing or mistyped key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses option text; `path` is used in error messages.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |reason: String| Error::Options {
            path: path.to_owned(),
            reason,
        };
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| err(format!("invalid YAML: {e}")))?;
        let doc = docs
            .into_iter()
            .next()
            .ok_or_else(|| err("the file is empty".into()))?;
        let network = match &doc["network_G"] {
            Yaml::BadValue => None,
            net => Some(parse_network(net).map_err(|r| err(format!("network_G: {r}")))?),
        };
        let sde = match &doc["sde"] {
            Yaml::BadValue => None,
            sde => Some(parse_sde(sde).map_err(|r| err(format!("sde: {r}")))?),
        };
        Ok(Self {
            path: path.to_owned(),
            network,
            sde,
        })
    }
}

fn uint(y: &Yaml, key: &str, default: Option<usize>) -> std::result::Result<usize, String> {
    match &y[key] {
        Yaml::Integer(v) if *v >= 0 => Ok(*v as usize),
        Yaml::BadValue | Yaml::Null => default.ok_or_else(|| format!("`{key}` is missing")),
        other => Err(format!(
            "`{key}` must be a non-negative integer, found {other:?}"
        )),
    }
}

fn uint_list(y: &Yaml, key: &str) -> std::result::Result<Option<Vec<usize>>, String> {
    match &y[key] {
        Yaml::BadValue | Yaml::Null => Ok(None),
        Yaml::Array(items) => items
            .iter()
            .map(|v| match v {
                Yaml::Integer(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!(
                    "`{key}` must list non-negative integers, found {other:?}"
                )),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        other => Err(format!("`{key}` must be a list, found {other:?}")),
    }
}

fn number(y: &Yaml, key: &str, default: Option<f64>) -> std::result::Result<f64, String> {
    match &y[key] {
        Yaml::Integer(v) => Ok(*v as f64),
        Yaml::Real(_) => y[key]
            .as_f64()
            .ok_or_else(|| format!("`{key}` is not a number")),
        Yaml::BadValue | Yaml::Null => default.ok_or_else(|| format!("`{key}` is missing")),
        other => Err(format!("`{key}` must be a number, found {other:?}")),
    }
}

fn parse_network(net: &Yaml) -> std::result::Result<NetworkOptions, String> {
    let which = net["which_model_G"]
        .as_str()
        .ok_or("`which_model_G` is missing")?;
    let s = &net["setting"];
    match which {
        "ConditionalUNet" => {
            let channel_mults = match uint_list(s, "ch_mult")? {
                Some(m) => m,
                None => {
                    let depth = uint(s, "depth", Some(4))?;
                    (1..=depth).map(|i| 1 << i).collect()
                }
            };
            Ok(NetworkOptions::UNet {
                in_nc: uint(s, "in_nc", None)?,
                out_nc: uint(s, "out_nc", None)?,
                nf: uint(s, "nf", None)?,
                channel_mults,
            })
        }
        "ConditionalNAFNet" => Ok(NetworkOptions::NafNet(NafNetConfig {
            img_channels: uint(s, "img_channel", Some(3))?,
            width: uint(s, "width", Some(16))?,
            enc_blocks: uint_list(s, "enc_blk_nums")?.unwrap_or_default(),
            middle_blocks: uint(s, "middle_blk_num", Some(1))?,
            dec_blocks: uint_list(s, "dec_blk_nums")?.unwrap_or_default(),
            conditional: true,
        })),
        other => Err(format!(
            "`which_model_G: {other}` is not supported; supported are ConditionalUNet and \
             ConditionalNAFNet"
        )),
    }
}

fn parse_sde(sde: &Yaml) -> std::result::Result<SdeOptions, String> {
    let theta = match sde["schedule"].as_str() {
        None => ThetaSchedule::Cosine,
        Some(s) => s.parse().map_err(|e: mrsampler::Error| e.to_string())?,
    };
    Ok(SdeOptions {
        max_sigma: number(sde, "max_sigma", None)?,
        steps: uint(sde, "T", None)?,
        theta,
        eps: number(sde, "eps", Some(0.01))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DERAINING: &str = "
name: ir-sde
sde:
  max_sigma: 10
  T: 100
  schedule: cosine # linear, cosine
  eps: 0.005
degradation:
  sigma: 25
network_G:
  which_model_G: ConditionalUNet
  setting:
    in_nc: 3
    out_nc: 3
    nf: 64
    depth: 4
";

    #[test]
    fn reads_the_two_sections() {
        let o = UpstreamOptions::parse(DERAINING, Path::new("x.yml")).unwrap();
        assert_eq!(
            o.network,
            Some(NetworkOptions::UNet {
                in_nc: 3,
                out_nc: 3,
                nf: 64,
                channel_mults: vec![2, 4, 8, 16]
            })
        );
        let sde = o.sde.unwrap();
        assert_eq!(sde.steps, 100);
        assert_eq!(sde.eps, 0.005);
        assert_eq!(sde.max_sigma, 10.0);
        assert_eq!(sde.theta, ThetaSchedule::Cosine);
        assert!((sde.schedule().unwrap().max_sigma() - 10.0).abs() < 1e-12);
    }

    #[test]
    fn nafnet_setting_and_defaults() {
        let text = "network_G:\n  which_model_G: ConditionalNAFNet\n  setting:\n    width: 64\n    enc_blk_nums: [1, 1, 1, 28]\n    middle_blk_num: 1\n    dec_blk_nums: [1, 1, 1, 1]\nsde:\n  max_sigma: 70\n  T: 1000\n";
        let o = UpstreamOptions::parse(text, Path::new("x.yml")).unwrap();
        assert_eq!(
            o.network,
            Some(NetworkOptions::NafNet(NafNetConfig::refusion()))
        );
        let sde = o.sde.unwrap();
        assert_eq!((sde.eps, sde.theta), (0.01, ThetaSchedule::Cosine));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("network_G: [", "invalid YAML"),
            ("network_G:\n  which_model_G: RRDBNet\n", "not supported"),
            (
                "network_G:\n  which_model_G: ConditionalUNet\n  setting:\n    in_nc: 3\n",
                "`out_nc` is missing",
            ),
            (
                "sde:\n  max_sigma: ten\n  T: 100\n",
                "`max_sigma` must be a number",
            ),
            (
                "sde:\n  max_sigma: 10\n  T: 100\n  schedule: quadratic\n",
                "theta_schedule",
            ),
        ];
        for (text, want) in cases {
            let e = UpstreamOptions::parse(text, Path::new("o.yml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
