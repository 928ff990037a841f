//! Writes the test recordings as the mica decoder gives them (16 kHz mono f32 little-endian,
//! `NAME.f32`) so `scripts/golden.py` runs onnxruntime on exactly the samples the tests see.
//!
//! `cargo run --release -p mica-vad --example dump_audio -- OUT_DIR`

use std::io::Write;
use std::path::PathBuf;

#[path = "../tests/common/files.rs"]
mod files;
use files::FILES;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: dump_audio OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    for (name, asset, file) in FILES {
        let path = mica_models::ensure(asset)?.join(file);
        let audio = mica_media::load_all(&path)?;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(out.join(format!("{name}.f32")))?);
        for s in &audio.samples {
            f.write_all(&s.to_le_bytes())?;
        }
        f.flush()?;
        eprintln!("{name}: {} samples", audio.samples.len());
    }
    Ok(())
}
