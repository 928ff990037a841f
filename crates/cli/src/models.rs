//! `mica models fetch | list | verify`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use mica_models::{Asset, AssetKind, Manifest, Status, Store};

/// Arguments of `mica models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download, verify and convert models (and test media); all of them when no name is given.
    Fetch {
        /// Asset names (`mica models list` shows them).
        names: Vec<String>,
        /// Reinstall even when already installed.
        #[arg(long)]
        force: bool,
        /// Only models, or only samples, when no names are given.
        #[arg(long, value_enum)]
        only: Option<Only>,
    },
    /// List every known model and sample and whether it is installed.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Re-hash installed files against the checksums recorded at install.
    Verify {
        /// Asset names; all installed ones when none are given.
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Only {
    Models,
    Samples,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

/// Runs `mica models ...`.
pub fn run(args: ModelsArgs) -> Result<()> {
    let manifest = Manifest::builtin();
    let store = Store::from_env();
    match args.command {
        ModelsCommand::Fetch { names, force, only } => {
            let assets = select(manifest, &names, |a| match only {
                None => true,
                Some(Only::Models) => a.kind == AssetKind::Model,
                Some(Only::Samples) => a.kind == AssetKind::Sample,
            })?;
            for asset in assets {
                let dir = if force {
                    store.fetch(asset, true)
                } else {
                    store.ensure(asset)
                }
                .with_context(|| format!("fetching {}", asset.name))?;
                tracing::debug!("{}: {}", asset.name, dir.display());
            }
            Ok(())
        }
        ModelsCommand::List { format } => list(manifest, &store, format),
        ModelsCommand::Verify { names } => {
            let explicit = !names.is_empty();
            let assets = select(manifest, &names, |a| {
                matches!(store.status(a), Status::Installed(_))
            })?;
            let mut failed = 0;
            for asset in assets {
                match store.verify(asset) {
                    Ok(dir) => tracing::info!("{}: ok ({})", asset.name, dir.display()),
                    Err(e) => {
                        tracing::error!("{}: {e}", asset.name);
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} asset(s) failed verification");
            }
            if !explicit {
                tracing::info!("all installed assets verified");
            }
            Ok(())
        }
    }
}

/// The named assets, or those passing `filter` when no names are given.
fn select<'m>(
    manifest: &'m Manifest,
    names: &[String],
    filter: impl Fn(&Asset) -> bool,
) -> Result<Vec<&'m Asset>> {
    if names.is_empty() {
        return Ok(manifest.assets.iter().filter(|a| filter(a)).collect());
    }
    names
        .iter()
        .map(|n| manifest.get(n).map_err(anyhow::Error::from))
        .collect()
}

fn list(manifest: &Manifest, store: &Store, format: ListFormat) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ListFormat::Json => {
            let rows: Vec<_> = manifest
                .assets
                .iter()
                .map(|a| {
                    let path = match store.status(a) {
                        Status::Installed(dir) => Some(dir),
                        Status::Missing => None,
                    };
                    serde_json::json!({
                        "name": a.name,
                        "kind": a.kind,
                        "installed": path.is_some(),
                        "path": path,
                        "license": a.license,
                        "description": a.description,
                        "packages": a.sources.iter().map(|s| s.id()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        ListFormat::Table => {
            writeln!(
                out,
                "{:<22} {:<7} {:<10} {:<13} DESCRIPTION",
                "NAME", "KIND", "INSTALLED", "LICENSE"
            )?;
            for a in &manifest.assets {
                let kind = match a.kind {
                    AssetKind::Model => "model",
                    AssetKind::Sample => "sample",
                };
                let installed = match store.status(a) {
                    Status::Installed(_) => "yes",
                    Status::Missing => "no",
                };
                writeln!(
                    out,
                    "{:<22} {:<7} {:<10} {:<13} {}",
                    a.name, kind, installed, a.license, a.description
                )?;
            }
        }
    }
    Ok(())
}
