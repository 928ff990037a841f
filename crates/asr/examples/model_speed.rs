//! Times the network alone, outside criterion (whose analysis threads would pollute a
//! profile): `model_speed [MODEL] [PRECISION] [REPEATS]`, e.g. under `perf record`.
//! Prints the median encoder time for one 30 s window and of a decode step with 1 and 5
//! rows after a 30-token context.

use std::time::Instant;

use candle_core::{Device, Tensor};
use mica_asr::{LogMel, Precision, Whisper, mel_batch};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("tiny.en", String::as_str);
    let precision: Precision = args.get(1).map_or("q8_0", String::as_str).parse()?;
    let repeats: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let jfk = mica_media::load_all(mica_models::ensure("jfk")?.join("jfk.wav"))?;
    let audio: Vec<f32> = jfk
        .samples
        .iter()
        .copied()
        .cycle()
        .take(30 * 16_000)
        .collect();
    let mel = LogMel::new(80)?.compute(&audio)?;
    let window = mel_batch(&[(&mel, 0)], &Device::Cpu)?;
    let m = Whisper::load(&mica_models::ensure(name)?, &Device::Cpu, precision)?;
    let mut times = Vec::new();
    let mut features = m.encode(&window)?;
    // MICA_SKIP_ENCODER=1: time the decoder steps alone (for a profile of them).
    let encoder_repeats = if std::env::var_os("MICA_SKIP_ENCODER").is_some() {
        0
    } else {
        repeats
    };
    for _ in 0..encoder_repeats {
        let t = Instant::now();
        features = m.encode(&window)?;
        times.push(t.elapsed().as_secs_f64());
    }
    if !times.is_empty() {
        println!("{name} {precision}: encoder {:.1} ms", 1e3 * median(times));
    }
    let sot = m.config().decoder_start_token_id.unwrap_or(50257);
    let ctx: Vec<u32> = (0..30).map(|i| [sot, 440, 1110, 286, 262][i % 5]).collect();
    for rows in [1usize, 5] {
        let ctx_rows: Vec<u32> = (0..rows).flat_map(|_| ctx.iter().copied()).collect();
        let ctx = Tensor::from_vec(ctx_rows, (rows, 30), m.device())?;
        let step = Tensor::from_vec(vec![440u32; rows], (rows, 1), m.device())?;
        let mut times = Vec::new();
        for _ in 0..repeats {
            let mut s = m.decoder_state(&features, rows)?;
            m.decode(&mut s, &ctx, false)?;
            let t = Instant::now();
            for _ in 0..20 {
                m.decode(&mut s, &step, false)?;
            }
            times.push(t.elapsed().as_secs_f64() / 20.0);
        }
        println!("  decode step, {rows} rows: {:.2} ms", 1e3 * median(times));
    }
    Ok(())
}
