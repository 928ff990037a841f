//! Long recordings of real voices (crates/testdata): the speaker count found without being
//! told and the DER against the exact turns. On `long-english` one voice (Allison's
//! telephone prompts) holds 91% of the speech of 10 minutes and three others come and go;
//! before the speakers' centroids were compared and the centring rebalanced, she was split
//! into about ten speakers (11 found, DER 73% on the first cut of the set). The same
//! recording with digital silence in its pauses is checked too.

mod common;

use common::*;
use mica_diarize::der::der;
use mica_diarize::{DiarizeOptions, Diarizer};
use mica_testdata::LongSet;

fn check(set: &LongSet) -> Res<()> {
    let diarizer = Diarizer::new(segmentation()?, encoder()?, DiarizeOptions::default())?;
    let out = diarizer.diarize(&set.samples)?;
    let truth = set.turns();
    let report = der(&truth, &out.turns, 0.25);
    let found = out.speakers.len();
    println!(
        "{}: {:.0} s, {found} speakers found of {}, DER {:.2}% (collar 0.25 s; missed {:.1} s, \
         false alarm {:.1} s, confusion {:.1} s)",
        set.name,
        set.duration(),
        set.speakers(),
        report.der * 100.0,
        report.missed,
        report.false_alarm,
        report.confusion
    );
    assert!(
        found.abs_diff(set.speakers()) <= 1,
        "{}: {found} speakers for {}",
        set.name,
        set.speakers()
    );
    assert!(report.der <= 0.15, "{}: DER {}", set.name, report.der);
    Ok(())
}

#[test]
fn one_voice_filling_ten_minutes_stays_one_speaker() -> Res<()> {
    check(&mica_testdata::long_english()?)
}

#[test]
fn the_same_with_silent_pauses() -> Res<()> {
    check(&mica_testdata::long_english()?.with_silent_pauses())
}

#[test]
fn six_voices_coming_back_over_fifteen_minutes() -> Res<()> {
    check(&mica_testdata::long_voices()?)
}
