//! Times the Silero VAD network alone (no process start, model loading or decoding) on one
//! recording and prints JSON for `benches/compare_vad.py`:
//!
//! - `single`: one stream over the whole file through [`Vad::detect`] (windows of 512
//!   samples with 64 of context, state carried; the speech regions are printed too);
//! - `batched`: the file split into `--streams` consecutive parts (default 32), run as that
//!   many independent streams through [`SileroVad::forward`], one window per stream per
//!   call, state carried; the time includes assembling the input rows and reading the
//!   probabilities back.
//!
//! - `workers` (with `--workers W`, W > 1): the file split into W consecutive shares, each
//!   run by its own thread as `--streams` batched streams, all threads at once; this is how
//!   the engine's workers (one per core, candle single-threaded) use the model, and the
//!   time is the wall clock of the slowest.
//!
//! `cargo run --release -p mica-vad --example vad_speed -- FILE.wav [--repeat N] [--streams B] [--workers W] [--device cpu|cuda]`
//!
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS` (default: every core); run the
//! workers mode with `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1`.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use mica_vad::{SampleRate, SileroVad, SpeechOptions, Vad, VadError};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    input: String,
    repeat: usize,
    streams: usize,
    workers: usize,
    device: mica_core::device::DeviceSpec,
}

fn args() -> Res<Args> {
    let usage = "usage: vad_speed FILE [--repeat N] [--streams B] [--workers W] [--device D]";
    let mut it = std::env::args().skip(1);
    let mut out = Args {
        input: String::new(),
        repeat: 5,
        streams: 32,
        workers: 1,
        device: mica_core::device::DeviceSpec::Cpu,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repeat" => out.repeat = it.next().ok_or(usage)?.parse()?,
            "--streams" => out.streams = it.next().ok_or(usage)?.parse()?,
            "--workers" => out.workers = it.next().ok_or(usage)?.parse()?,
            "--device" => out.device = it.next().ok_or(usage)?.parse()?,
            _ if out.input.is_empty() && !a.starts_with("--") => out.input = a,
            _ => return Err(usage.into()),
        }
    }
    if out.input.is_empty() || out.repeat == 0 || out.streams == 0 || out.workers == 0 {
        return Err(usage.into());
    }
    Ok(out)
}

/// One pass of `streams` batched streams over consecutive parts of `audio` (the last part
/// zero-padded); returns each stream's probabilities.
fn batched(
    model: &SileroVad,
    audio: &[f32],
    rate: SampleRate,
    streams: usize,
) -> Result<Vec<Vec<f32>>, VadError> {
    let (win, len) = (rate.window(), rate.input_len());
    let steps = audio.len().div_ceil(streams * win);
    let part = steps * win;
    let device = model.device();
    let mut state = model.zero_state(streams)?;
    let mut rows = Vec::with_capacity(streams * len);
    let mut probs = Vec::with_capacity(steps);
    for step in 0..steps {
        rows.clear();
        // The last part is short (zero-padded by push_row); a part past the end is empty.
        for s in 0..streams {
            let part_audio = audio.get(s * part..).unwrap_or(&[]);
            rate.push_row(&mut rows, &part_audio[..part.min(part_audio.len())], step);
        }
        let input = Tensor::from_slice(&rows, (streams, len), device)?;
        let (p, next) = model.forward(rate, &input, &state)?;
        state = next;
        probs.push(p);
    }
    let probs = Tensor::stack(&probs, 1)?.to_vec2::<f32>()?;
    device.synchronize()?;
    Ok(probs)
}

/// One pass of `workers` threads at once, each running its consecutive share of `audio` as
/// `streams` batched streams; returns the wall-clock seconds.
fn in_workers(
    model: &SileroVad,
    audio: &[f32],
    rate: SampleRate,
    streams: usize,
    workers: usize,
) -> Res<f64> {
    let share = audio.len().div_ceil(workers);
    let t = Instant::now();
    let results: Vec<Result<usize, VadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = audio
            .chunks(share.max(1))
            .map(|part| scope.spawn(move || batched(model, part, rate, streams).map(|p| p.len())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or(Err(mica_core::error::RunError::option(
                    "bench",
                    "worker panicked",
                )
                .into()))
            })
            .collect()
    });
    let elapsed = t.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    Ok(elapsed)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Res<()> {
    let args = args()?;
    let device = args.device.resolve()?;
    let model: Arc<SileroVad> = SileroVad::from_path(mica_models::ensure("silero-v6")?, &device)?;
    let audio = mica_media::load_all(&args.input)?.samples;
    let rate = SampleRate::Hz16000;
    let vad = Vad::new(Arc::clone(&model), SpeechOptions::default())?;

    // Warm-up (allocations, page faults), then the timed runs.
    let reference = vad.detect(&audio, rate)?;
    let mut single = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let t = Instant::now();
        let out = vad.detect(&audio, rate)?;
        device.synchronize()?;
        single.push(t.elapsed().as_secs_f64());
        if out != reference {
            return Err("the single-stream output changed between runs".into());
        }
    }

    let first = batched(&model, &audio, rate, args.streams)?;
    let mut batch = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let t = Instant::now();
        let out = batched(&model, &audio, rate, args.streams)?;
        batch.push(t.elapsed().as_secs_f64());
        if out != first {
            return Err("the batched output changed between runs".into());
        }
    }
    // Stream 0 of the batch starts at the file's start, like the single stream: same input,
    // so the same probabilities (up to summation order in the batched GEMMs).
    let diff = first
        .first()
        .map(|p| {
            p.iter()
                .zip(&reference.probabilities)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        })
        .unwrap_or(0.0);
    let steps = first.first().map_or(0, Vec::len);

    let mut workers = Vec::new();
    if args.workers > 1 {
        in_workers(&model, &audio, rate, args.streams, args.workers)?;
        for _ in 0..args.repeat {
            workers.push(in_workers(
                &model,
                &audio,
                rate,
                args.streams,
                args.workers,
            )?);
        }
    }

    let report = serde_json::json!({
        "file": args.input,
        "samples": audio.len(),
        "seconds": audio.len() as f64 / f64::from(rate.hz()),
        "threads": candle_core::utils::get_num_threads(),
        "single": {
            "windows": reference.probabilities.len(),
            "times_s": single,
            "median_s": median(&single),
        },
        "batched": {
            "streams": args.streams,
            "windows": steps * args.streams,
            "times_s": batch,
            "median_s": median(&batch),
            "stream0_max_abs_diff_vs_single": diff,
        },
        "workers": (args.workers > 1).then(|| serde_json::json!({
            "workers": args.workers,
            "streams_per_worker": args.streams,
            "times_s": workers,
            "median_s": median(&workers),
        })),
        "segments": reference
            .segments
            .iter()
            .map(|s| [s.start, s.end])
            .collect::<Vec<_>>(),
    });
    println!("{report}");
    Ok(())
}
