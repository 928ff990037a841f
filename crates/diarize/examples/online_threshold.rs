//! Calibrates the online speaker threshold ([`mica_diarize::OnlineOptions`]) on the long
//! evaluation sets: every reference utterance is embedded as one clip and labelled in
//! order, as a live session would, for a sweep of thresholds; prints the speakers found
//! and the DER (0.25 s collar) against the reference turns.
//!
//! `cargo run --release -p mica-diarize --example online_threshold`

use candle_core::Device;
use mica_core::document::SpeakerTurn;
use mica_diarize::{OnlineOptions, OnlineSpeakers, SpeakerEncoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let encoder =
        SpeakerEncoder::from_path(mica_models::ensure(SpeakerEncoder::ASSET)?, &Device::Cpu)?;
    for set in [
        mica_testdata::long_english()?,
        mica_testdata::long_voices()?,
    ] {
        let clips: Vec<(Vec<f32>, f64)> = set
            .utterances
            .iter()
            .map(|u| {
                let a = (u.start * 16_000.0) as usize;
                let b = ((u.end * 16_000.0) as usize).min(set.samples.len());
                Ok((encoder.embed_clip(&set.samples[a..b])?, u.end - u.start))
            })
            .collect::<Result<_, mica_diarize::DiarizeError>>()?;
        println!(
            "{}: {} utterances, {} speakers",
            set.name,
            clips.len(),
            set.speakers()
        );
        for t in (60..=90).step_by(2) {
            let threshold = t as f32 / 100.0;
            let mut online = OnlineSpeakers::new(OnlineOptions {
                threshold,
                ..OnlineOptions::default()
            })?;
            let hypothesis: Vec<SpeakerTurn> = set
                .utterances
                .iter()
                .zip(&clips)
                .map(|(u, (e, seconds))| SpeakerTurn {
                    start: u.start,
                    end: u.end,
                    speaker: format!("S{}", online.assign(e, *seconds)),
                })
                .collect();
            let report = mica_diarize::der::der(&set.turns(), &hypothesis, 0.25);
            println!(
                "  threshold {threshold:.2}: {} speakers, DER {:.1}%",
                online.count(),
                100.0 * report.der
            );
        }
    }
    Ok(())
}
