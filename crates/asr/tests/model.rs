//! The Whisper network against CTranslate2 4.8.5 (the engine of faster-whisper) on the same
//! weights and real audio (JFK): encoder output and per-step decoder logits
//! (tests/golden/model_{tiny.en,base}.json from scripts/golden_model.py); cached decoding
//! against an uncached recompute; batched rows and items against single rows; the
//! quantized path's greedy text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{Device, IndexOp, Tensor};
use mica_asr::{AsrError, DecoderState, LogMel, Mel, Precision, Whisper, mel_batch};
use mica_core::error::{ErrorKind, RunError};
use serde::Deserialize;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct Step {
    ids: Vec<u32>,
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct AudioMeta {
    samples: usize,
    sum: f64,
}

#[derive(Deserialize)]
struct Golden {
    jfk: AudioMeta,
    encoder_rows: Vec<usize>,
    encoder: Vec<f32>,
    encoder_row_norms: Vec<f32>,
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    steps: Vec<Step>,
}

fn golden(name: &str) -> Res<Golden> {
    let text = match name {
        "tiny.en" => include_str!("golden/model_tiny.en.json"),
        "base" => include_str!("golden/model_base.json"),
        other => return Err(format!("no golden for {other}").into()),
    };
    Ok(serde_json::from_str(text)?)
}

/// Loaded models by (name, precision).
type Models = Mutex<HashMap<(String, Precision), Arc<Whisper>>>;

/// Models loaded once per test binary, shared by the tests.
fn model(name: &str, precision: Precision) -> Res<Arc<Whisper>> {
    static MODELS: OnceLock<Models> = OnceLock::new();
    let map = MODELS.get_or_init(Default::default);
    let key = (name.to_string(), precision);
    if let Some(m) = map.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(Arc::clone(m));
    }
    let dir = mica_models::ensure(name)?;
    let m = Arc::new(Whisper::load(&dir, &Device::Cpu, precision)?);
    map.lock()
        .map_err(|e| e.to_string())?
        .insert(key, Arc::clone(&m));
    Ok(m)
}

fn jfk_mel(n_mels: usize, meta: &AudioMeta) -> Res<Mel> {
    let dir = mica_models::ensure("jfk")?;
    let x = mica_media::load_all(dir.join("jfk.wav"))?.samples;
    assert_eq!(x.len(), meta.samples, "jfk sample count");
    let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
    assert!((sum - meta.sum).abs() < 1e-6, "jfk decoded differently");
    Ok(LogMel::new(n_mels)?.compute(&x)?)
}

fn max_abs(a: &Tensor, b: &Tensor) -> Res<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn argmax(logits: &Tensor) -> Res<u32> {
    Ok(logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
}

fn eos(m: &Whisper) -> u32 {
    m.config().eos_token_id.unwrap_or(50256)
}

/// Logits of every position of `tokens`, fed one token at a time after the prompt.
fn stepwise(
    m: &Whisper,
    st: &mut DecoderState,
    prompt: &[u32],
    tokens: &[u32],
) -> Res<Vec<Tensor>> {
    let rows = st.rows();
    let p: Vec<u32> = (0..rows).flat_map(|_| prompt.iter().copied()).collect();
    let mut out = vec![m.decode(
        st,
        &Tensor::from_vec(p, (rows, prompt.len()), m.device())?,
        false,
    )?];
    for &t in tokens {
        let x = Tensor::from_vec(vec![t; rows], (rows, 1), m.device())?;
        out.push(m.decode(st, &x, false)?);
    }
    Ok(out)
}

/// Greedy argmax decoding (no logit filters) until end of text.
fn greedy(m: &Whisper, features: &Tensor, prompt: &[u32]) -> Res<Vec<u32>> {
    let mut st = m.decoder_state(features, 1)?;
    let mut logits = m.decode(
        &mut st,
        &Tensor::new(prompt, m.device())?.unsqueeze(0)?,
        false,
    )?;
    let mut out = Vec::new();
    for _ in 0..100 {
        let t = argmax(&logits)?;
        if t == eos(m) {
            break;
        }
        out.push(t);
        logits = m.decode(&mut st, &Tensor::new(&[[t]], m.device())?, false)?;
    }
    Ok(out)
}

fn parity(name: &str, enc_tol: f32, logit_tol: f32) -> TestResult {
    let g = golden(name)?;
    let m = model(name, Precision::F32)?;
    let mel = jfk_mel(m.config().num_mel_bins, &g.jfk)?;
    let features = m.encode(&mel_batch(&[(&mel, 0)], m.device())?)?;
    let d = m.config().d_model;
    assert_eq!(features.dims(), &[1, 1500, d]);

    // Encoder output at the stored rows, and every row's norm.
    let mut worst = 0.0f32;
    let f = features.i(0)?;
    for (i, &r) in g.encoder_rows.iter().enumerate() {
        let got = f.i(r)?.to_vec1::<f32>()?;
        for (a, b) in got.iter().zip(&g.encoder[i * d..(i + 1) * d]) {
            worst = worst.max((a - b).abs());
        }
    }
    let norms = f.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    let worst_norm = norms
        .iter()
        .zip(&g.encoder_row_norms)
        .map(|(a, b)| (a - b).abs() / b)
        .fold(0.0f32, f32::max);
    eprintln!(
        "{name}: encoder max abs diff {worst:.2e}, worst relative row-norm diff {worst_norm:.2e}"
    );
    assert!(worst < enc_tol, "{name}: encoder max abs diff {worst}");
    assert!(
        worst_norm < 1e-4,
        "{name}: encoder row norms differ by {worst_norm}"
    );

    // Decoder: CT2's greedy tokens fed step by step; logits at CT2's top-10 ids per step.
    let mut st = m.decoder_state(&features, 1)?;
    let steps = stepwise(&m, &mut st, &g.prompt, &g.tokens)?;
    assert_eq!(steps.len(), g.steps.len());
    let mut worst = 0.0f32;
    for (k, (got, want)) in steps.iter().zip(&g.steps).enumerate() {
        let got = got.i(0)?.to_vec1::<f32>()?;
        for (&id, &v) in want.ids.iter().zip(&want.values) {
            worst = worst.max((got[id as usize] - v).abs());
        }
        let top =
            got.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &v)| if v > a.1 { (i, v) } else { a },
            );
        assert_eq!(
            top.0 as u32, want.ids[0],
            "{name}: step {k} argmax differs from CTranslate2"
        );
    }
    eprintln!(
        "{name}: decoder logits max abs diff {worst:.2e} over {} steps",
        steps.len()
    );
    assert!(
        worst < logit_tol,
        "{name}: decoder logits max abs diff {worst}"
    );

    // Greedy decoding from scratch gives CT2's tokens.
    assert_eq!(
        greedy(&m, &features, &g.prompt)?,
        g.tokens,
        "{name}: greedy tokens"
    );
    Ok(())
}

#[test]
fn tiny_en_matches_ctranslate2() -> TestResult {
    parity("tiny.en", 2e-4, 5e-4)
}

#[test]
fn base_matches_ctranslate2() -> TestResult {
    parity("base", 2e-4, 5e-4)
}

/// Step-by-step cached logits equal one uncached pass over the whole sequence.
#[test]
fn cached_equals_uncached() -> TestResult {
    let g = golden("tiny.en")?;
    let m = model("tiny.en", Precision::F32)?;
    let mel = jfk_mel(80, &g.jfk)?;
    let features = m.encode(&mel_batch(&[(&mel, 0)], m.device())?)?;
    let mut st = m.decoder_state(&features, 1)?;
    let steps = stepwise(&m, &mut st, &g.prompt, &g.tokens)?;
    assert_eq!(st.len(), g.prompt.len() + g.tokens.len());

    let mut all: Vec<u32> = g.prompt.clone();
    all.extend(&g.tokens);
    let mut fresh = m.decoder_state(&features, 1)?;
    let full = m.decode(
        &mut fresh,
        &Tensor::new(all.as_slice(), m.device())?.unsqueeze(0)?,
        true,
    )?;
    assert_eq!(full.dims(), &[1, all.len(), m.config().vocab_size]);
    let p = g.prompt.len();
    let mut worst = 0.0f32;
    for (k, s) in steps.iter().enumerate() {
        worst = worst.max(max_abs(&full.i((0, p - 1 + k))?, &s.i(0)?)?);
    }
    eprintln!("cached vs uncached: max abs diff {worst:.2e}");
    assert!(worst < 1e-4, "cached vs uncached max abs diff {worst}");
    Ok(())
}

/// Two audio items x three rows, rows reordered and items dropped mid-way, against each
/// row decoded alone.
#[test]
fn batched_rows_equal_single_rows() -> TestResult {
    let g = golden("tiny.en")?;
    let m = model("tiny.en", Precision::F32)?;
    let mel = jfk_mel(80, &g.jfk)?;
    // Item 1: the same recording 2 s later in its window (different features).
    let batch = mel_batch(&[(&mel, 0), (&mel, 200)], m.device())?;
    let features = m.encode(&batch)?;
    let single_features = m.encode(&mel_batch(&[(&mel, 200)], m.device())?)?;
    let worst_enc = max_abs(&features.i(1..2)?, &single_features)?;
    eprintln!("batched vs single encoder: max abs diff {worst_enc:.2e}");
    assert!(worst_enc < 1e-4);

    let rpi = 3;
    let mut st = m.decoder_state(&features, rpi)?;
    assert_eq!((st.items(), st.rows(), st.rows_per_item()), (2, 6, 3));
    let prompt = &g.prompt;
    let rows = st.rows();
    let p: Vec<u32> = (0..rows).flat_map(|_| prompt.iter().copied()).collect();
    m.decode(
        &mut st,
        &Tensor::from_vec(p, (rows, prompt.len()), m.device())?,
        false,
    )?;
    // Per row, a different continuation.
    let seqs: Vec<Vec<u32>> = (0..rows)
        .map(|r| g.tokens[r % 3..r % 3 + 4].to_vec())
        .collect();
    for k in 0..2 {
        let x: Vec<u32> = seqs.iter().map(|s| s[k]).collect();
        m.decode(&mut st, &Tensor::from_vec(x, (rows, 1), m.device())?, false)?;
    }
    // Beam reorder inside each item: row 0 <- 2, row 1 <- 0, row 2 <- 2; item 1 reversed.
    let src = [2u32, 0, 2, 5, 4, 3];
    st.reorder(&src)?;
    let hist: Vec<Vec<u32>> = src
        .iter()
        .map(|&s| seqs[s as usize][..2].to_vec())
        .collect();
    let x: Vec<u32> = (0..rows).map(|r| seqs[r][2]).collect();
    let got = m.decode(
        &mut st,
        &Tensor::from_vec(x.clone(), (rows, 1), m.device())?,
        false,
    )?;

    let mut worst = 0.0f32;
    for r in 0..rows {
        let item = r / rpi;
        let mut one = m.decoder_state(&features.i(item..item + 1)?, 1)?;
        let mut seq = prompt.clone();
        seq.extend(&hist[r]);
        seq.push(x[r]);
        let want = m.decode(
            &mut one,
            &Tensor::new(seq.as_slice(), m.device())?.unsqueeze(0)?,
            false,
        )?;
        worst = worst.max(max_abs(&got.i(r)?, &want.i(0)?)?);
    }
    eprintln!("batched rows vs single rows: max abs diff {worst:.2e}");
    assert!(worst < 1e-4, "batched rows vs single rows: {worst}");

    // Drop item 0: item 1's rows continue unchanged.
    st.keep_items(&[1])?;
    assert_eq!((st.items(), st.rows()), (1, 3));
    let y = Tensor::from_vec(vec![g.tokens[5]; 3], (3, 1), m.device())?;
    let after = m.decode(&mut st, &y, false)?;
    let mut one = m.decoder_state(&features.i(1..2)?, 1)?;
    let mut seq = prompt.clone();
    seq.extend(&hist[3]);
    seq.push(x[3]);
    seq.push(g.tokens[5]);
    let want = m.decode(
        &mut one,
        &Tensor::new(seq.as_slice(), m.device())?.unsqueeze(0)?,
        false,
    )?;
    let d = max_abs(&after.i(0)?, &want.i(0)?)?;
    assert!(d < 1e-4, "after keep_items: {d}");

    // Rows may not leave their item; unknown items are refused.
    assert!(matches!(st.reorder(&[0, 1, 3]), Err(AsrError::State(_))));
    assert!(matches!(st.keep_items(&[1]), Err(AsrError::State(_))));
    Ok(())
}

/// Alignment-head attention: one row per head, each a distribution over the audio, and
/// the same weights whatever else is in the sequence after a position (causality).
#[test]
fn alignment_attention_shape_and_causality() -> TestResult {
    let g = golden("tiny.en")?;
    let m = model("tiny.en", Precision::F32)?;
    let mel = jfk_mel(80, &g.jfk)?;
    let features = m.encode(&mel_batch(&[(&mel, 0)], m.device())?)?;
    let mut seq = g.prompt.clone();
    seq.extend(&g.tokens);
    let a = m.alignment_attention(&features, &seq)?;
    let heads = m.config().alignment_heads();
    assert_eq!(a.dims(), &[heads.len(), seq.len(), 1500]);
    let sums = a.sum(2)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4));
    let short = m.alignment_attention(&features, &seq[..10])?;
    let d = max_abs(&short, &a.narrow(1, 0, 10)?)?;
    assert!(d < 1e-5, "alignment weights depend on later tokens: {d}");
    // JFK speaks for ~11 s: the heads look inside the first 11 s (550 positions) for text.
    let peak = a.narrow(1, 3, 20)?.mean(0)?.argmax(1)?.to_vec1::<u32>()?;
    assert!(peak.iter().all(|&p| p < 560), "attention peaks {peak:?}");
    Ok(())
}

/// The q8_0 path (int8 weights and activations on the CPU) makes JFK's decisions (tiny.en
/// and base) as f32 and CTranslate2 do, with logits close to f32's. Teacher-forced, each
/// step's choice must be the reference token, except at most one step where f32 itself is
/// nearly tied (its margin under 1, less than q8's own logit error): there either choice
/// is right, and which one the quantized model makes differs between CPUs (at step 14
/// tiny.en picks '.' over ',' on a Zen 5, where f32's margin is 0.08, and ',' on the
/// machine the goldens were first checked on). Free-running greedy text must then equal
/// the reference up to that step, and entirely when there is none.
#[test]
fn q8_greedy_text() -> TestResult {
    for name in ["tiny.en", "base"] {
        let g = golden(name)?;
        let q = model(name, Precision::Q8_0)?;
        let f = model(name, Precision::F32)?;
        let mel = jfk_mel(80, &g.jfk)?;
        let window = mel_batch(&[(&mel, 0)], q.device())?;
        let qf = q.encode(&window)?;
        let tokens = greedy(&q, &qf, &g.prompt)?;
        let mut qs = q.decoder_state(&qf, 1)?;
        let ff = f.encode(&window)?;
        let mut fs = f.decoder_state(&ff, 1)?;
        let ql = stepwise(&q, &mut qs, &g.prompt, &g.tokens)?;
        let fl = stepwise(&f, &mut fs, &g.prompt, &g.tokens)?;
        let mut worst = 0.0f32;
        for (a, b) in ql.iter().zip(&fl) {
            worst = worst.max(max_abs(a, b)?);
        }
        eprintln!("{name} q8_0: logits max abs diff vs f32 {worst:.3} (logits ~20)");
        // Activations are quantized per row as well as weights (as CTranslate2's int8
        // does), so logits move by ~2 on a scale of ~20; the decisions must not, but for
        // near-ties.
        assert!(worst < 3.5, "{name} q8_0 logits differ from f32 by {worst}");
        let mut ties = Vec::new();
        for (i, (ql, fl)) in ql.iter().zip(&fl).enumerate().take(g.tokens.len()) {
            let (want, got) = (g.tokens[i], argmax(ql)?);
            if got != want {
                let f = fl.flatten_all()?.to_vec1::<f32>()?;
                ties.push((i, want, got, f[want as usize] - f[got as usize]));
            }
        }
        eprintln!(
            "{name} q8_0: steps choosing otherwise (step, reference, q8, f32 margin): {ties:?}"
        );
        assert!(
            ties.len() <= 1 && ties.iter().all(|t| t.3 < 1.0),
            "{name} q8_0 decisions differ from f32/CTranslate2 beyond a near-tie: {ties:?}"
        );
        let agree = ties.first().map_or(g.tokens.len(), |t| t.0);
        assert_eq!(
            tokens[..agree.min(tokens.len())],
            g.tokens[..agree],
            "{name} q8_0 greedy tokens differ from f32/CTranslate2 before any near-tie"
        );
        if ties.is_empty() {
            assert_eq!(tokens, g.tokens, "{name} q8_0 greedy tokens");
        }
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> TestResult {
    let m = model("tiny.en", Precision::F32)?;
    // A reduced audio context (an even frame count up to 3000) encodes to half as many
    // positions; an odd count or more than 30 s does not encode.
    let short = Tensor::zeros((1, 80, 100), candle_core::DType::F32, m.device())?;
    assert_eq!(m.encode(&short)?.dims(), &[1, 50, 384]);
    for frames in [101, 3002] {
        let bad = Tensor::zeros((1, 80, frames), candle_core::DType::F32, m.device())?;
        let err = m.encode(&bad).err().ok_or("encoded a bad frame count")?;
        assert!(
            matches!(err, AsrError::Run(RunError::InputShape { .. })),
            "{err}"
        );
    }
    let feats = Tensor::zeros((1, 1500, 384), candle_core::DType::F32, m.device())?;
    let mut st = m.decoder_state(&feats, 2)?;
    // Wrong row count.
    let err = m
        .decode(&mut st, &Tensor::new(&[[50257u32]], m.device())?, false)
        .err()
        .ok_or("decoded one row into a state of two")?;
    assert_eq!(err.kind(), ErrorKind::Input, "{err}");
    // Past max_target_positions.
    let long = Tensor::zeros((2, 449), candle_core::DType::U32, m.device())?;
    assert!(matches!(
        m.decode(&mut st, &long, false),
        Err(mica_asr::AsrError::ContextFull { .. })
    ));
    Ok(())
}

/// f16 weights and activations (the GPU precision) run the same network: on the CPU too,
/// with JFK's greedy text unchanged for tiny.en.
#[test]
fn f16_greedy_text() -> TestResult {
    let g = golden("tiny.en")?;
    let m = model("tiny.en", Precision::F16)?;
    let mel = jfk_mel(80, &g.jfk)?;
    let features = m.encode(&mel_batch(&[(&mel, 0)], m.device())?)?;
    assert_eq!(features.dtype(), candle_core::DType::F16);
    let tokens = greedy(&m, &features, &g.prompt)?;
    assert_eq!(tokens, g.tokens, "tiny.en f16 greedy tokens");
    Ok(())
}
