//! Times each network stage on a batch of 16 windows of real speech (the pyannote sample at
//! 1 s offsets) and 32 partials of 160 mel frames, REPEAT times (default 5), and prints
//! the medians; `benches/compare_diarize.py` runs the PyTorch references on the same input.
//!
//! `cargo run --release -p mica-diarize --example stage_times [-- REPEAT]`

use std::time::Instant;

use candle_core::{Device, Tensor};
use mica_diarize::{Segmentation, SpeakerEncoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let seg = Segmentation::from_path(mica_models::ensure(Segmentation::ASSET)?, &dev)?;
    let enc = SpeakerEncoder::from_path(mica_models::ensure(SpeakerEncoder::ASSET)?, &dev)?;
    let dir = mica_models::ensure("pyannote-sample")?;
    let audio = mica_media::load_all(dir.join("sample.wav"))?.samples;
    let b = 16;
    let mut rows = Vec::new();
    for i in 0..b {
        let s = (i * 16_000) % (audio.len() - 80_000);
        rows.extend_from_slice(&audio[s..s + 80_000]);
    }
    let x = Tensor::from_vec(rows, (b, 80_000), &dev)?;
    let repeat: usize = std::env::args().nth(1).map_or(Ok(5), |s| s.parse())?;
    let (mut segs, mut melts, mut embs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat {
        let t = Instant::now();
        let p = seg.forward(&x)?;
        let _ = p.flatten_all()?.to_vec1::<f32>()?;
        let seg_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let m = enc.mel().forward(&x)?;
        let _ = m.flatten_all()?.to_vec1::<f32>()?;
        let mel_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let seqs = m.narrow(1, 0, 160)?.contiguous()?;
        let seqs = Tensor::cat(&[&seqs, &seqs], 0)?;
        let _ = enc.embed(&seqs, &vec![160; 2 * b])?;
        let emb_s = t.elapsed().as_secs_f64();
        segs.push(1e3 * seg_s / b as f64);
        melts.push(1e3 * mel_s / b as f64);
        embs.push(1e3 * emb_s / (2 * b) as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {repeat}: segmentation {:.2} ms/window, mel {:.2} ms/window, embedding {:.2} ms/partial",
        median(&mut segs),
        median(&mut melts),
        median(&mut embs)
    );
    Ok(())
}
