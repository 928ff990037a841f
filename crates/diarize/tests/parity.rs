//! Both networks against their PyTorch references on the same samples
//! (tests/golden/{segmentation,embedding}.json from scripts/golden.py).

mod common;

use candle_core::Tensor;
use common::*;
use mica_diarize::segmentation::{WINDOW_SAMPLES, frames_for};

const TOLERANCE: f32 = 1e-4;

/// Both paths of each network: the CPU kernels (when the tests run on the CPU) and the
/// candle ops that accelerators run.
fn paths<T>(model: &T, generic: impl Fn(&T) -> T) -> [(&'static str, T); 2]
where
    T: Clone,
{
    [("kernels", model.clone()), ("candle ops", generic(model))]
}

#[test]
fn segmentation_matches_pytorch() -> TestResult {
    for (path, model) in paths(&*segmentation()?, |m| m.generic()) {
        eprintln!("segmentation, {path}:");
        segmentation_case(&model)?;
    }
    Ok(())
}

fn segmentation_case(model: &mica_diarize::Segmentation) -> TestResult {
    let g = golden("segmentation.json")?;
    let windows = g["windows"].as_array().ok_or("no windows")?;
    let mut rows = Vec::new();
    let mut want = Vec::new();
    for w in windows {
        let name = w["file"].as_str().ok_or("file")?;
        let start = w["start"].as_u64().ok_or("start")? as usize;
        let audio = audio16(name)?;
        let have = &audio[start.min(audio.len())..(start + WINDOW_SAMPLES).min(audio.len())];
        check_sum(name, have, w["input_sum"].as_f64().ok_or("sum")?);
        let mut row = have.to_vec();
        row.resize(WINDOW_SAMPLES, 0.0);
        rows.extend(row);
        want.push(floats(&w["probabilities"]));
    }
    let b = want.len();
    let input = Tensor::from_vec(rows, (b, WINDOW_SAMPLES), &device()?)?;
    let out = model.forward(&input)?;
    assert_eq!(out.dims(), &[b, frames_for(WINDOW_SAMPLES), 3]);
    // Batched, and each window alone: the same numbers either way.
    for (i, want) in want.iter().enumerate() {
        let got = out.get(i)?.flatten_all()?.to_vec1::<f32>()?;
        let (d, at) = max_diff(&got, want);
        let alone = model
            .forward(&input.narrow(0, i, 1)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (d1, _) = max_diff(&alone, want);
        eprintln!(
            "window {i}: max abs diff {d:.2e} (frame {}), alone {d1:.2e}",
            at / 3
        );
        assert!(d <= TOLERANCE && d1 <= TOLERANCE, "window {i}: {d} / {d1}");
    }
    Ok(())
}

#[test]
fn mel_front_end_matches_librosa() -> TestResult {
    for (path, enc) in paths(&*encoder()?, |m| m.generic()) {
        eprintln!("mel front end, {path}:");
        mel_case(&enc)?;
    }
    Ok(())
}

fn mel_case(enc: &mica_diarize::SpeakerEncoder) -> TestResult {
    let g = golden("embedding.json")?;
    let m = &g["mel"];
    let audio = audio16(m["file"].as_str().ok_or("file")?)?;
    let start = m["start"].as_u64().ok_or("start")? as usize;
    let n = m["samples"].as_u64().ok_or("samples")? as usize;
    let x = &audio[start..start + n];
    let out = enc
        .mel()
        .forward(&Tensor::from_slice(x, (1, n), &device()?)?)?;
    let frames = m["frames"].as_u64().ok_or("frames")? as usize;
    assert_eq!(out.dims(), &[1, frames, 40]);
    let got = out.flatten_all()?.to_vec1::<f32>()?;
    let want = floats(&m["values"]);
    // Power spectra span many decades: compare relative to each value, with a floor.
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0.0f32, f32::max);
    eprintln!("mel: {frames} frames, worst relative diff {worst:.2e}");
    assert!(worst <= 1e-4, "mel relative diff {worst}");
    Ok(())
}

#[test]
fn embeddings_match_pytorch() -> TestResult {
    for (path, enc) in paths(&*encoder()?, |m| m.generic()) {
        eprintln!("embeddings, {path}:");
        embedding_case(&enc)?;
    }
    Ok(())
}

fn embedding_case(enc: &mica_diarize::SpeakerEncoder) -> TestResult {
    let g = golden("embedding.json")?;
    let dev = device()?;
    let seqs = g["sequences"].as_array().ok_or("sequences")?;
    let mut mels = Vec::new();
    let mut lengths = Vec::new();
    let mut want = Vec::new();
    for s in seqs {
        let audio = audio16(s["file"].as_str().ok_or("file")?)?;
        let start = s["start"].as_u64().ok_or("start")? as usize;
        let n = s["samples"].as_u64().ok_or("samples")? as usize;
        let frames = s["frames"].as_u64().ok_or("frames")? as usize;
        let x = &audio[start..start + n];
        check_sum("sequence", x, s["input_sum"].as_f64().ok_or("sum")?);
        let mel = enc.mel().forward(&Tensor::from_slice(x, (1, n), &dev)?)?;
        mels.push(mel.narrow(1, 0, frames)?);
        lengths.push(frames);
        want.push(floats(&s["embedding"]));
    }
    let t = *lengths.iter().max().ok_or("no sequences")?;
    let padded: Vec<Tensor> = mels
        .iter()
        .map(|m| m.pad_with_zeros(1, 0, t - m.dim(1)?))
        .collect::<Result<_, _>>()?;
    let batch = Tensor::cat(&padded, 0)?;
    let out = enc.embed(&batch, &lengths)?;
    for (i, want) in want.iter().enumerate() {
        let got = out.get(i)?.to_vec1::<f32>()?;
        let alone = enc
            .embed(&mels[i], &[lengths[i]])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (d, _) = max_diff(&got, want);
        let (d1, _) = max_diff(&alone, want);
        eprintln!(
            "sequence {i} ({} frames): max abs diff {d:.2e} batched, {d1:.2e} alone",
            lengths[i]
        );
        assert!(
            d <= TOLERANCE && d1 <= TOLERANCE,
            "sequence {i}: {d} / {d1}"
        );
    }
    Ok(())
}
