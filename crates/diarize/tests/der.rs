//! The DER implementation against pyannote.metrics on the pyannote sample's reference and
//! hand-made hypotheses (tests/golden/der.json from scripts/golden.py).

mod common;

use common::*;
use mica_core::document::SpeakerTurn;
use mica_diarize::der::der;

fn turns(v: &serde_json::Value) -> Vec<SpeakerTurn> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(SpeakerTurn {
                start: t[0].as_f64()?,
                end: t[1].as_f64()?,
                speaker: t[2].as_str()?.to_string(),
            })
        })
        .collect()
}

#[test]
fn der_matches_pyannote_metrics() -> TestResult {
    let g = golden("der.json")?;
    let reference = turns(&g["reference"]);
    assert_eq!(reference.len(), 10);
    let cases = g["cases"].as_array().ok_or("cases")?;
    assert!(cases.len() >= 10);
    for c in cases {
        let hyp = turns(&c["hypothesis"]);
        let collar = c["collar"].as_f64().ok_or("collar")?;
        let d = der(&reference, &hyp, collar);
        let name = c["name"].as_str().unwrap_or("?");
        eprintln!(
            "{name:>18} collar {collar}: DER {:.4} (pyannote {:.4}), total {:.3}",
            d.der,
            c["der"].as_f64().unwrap_or(f64::NAN),
            d.total
        );
        for (mine, theirs) in [
            (d.der, "der"),
            (d.total, "total"),
            (d.missed, "missed"),
            (d.false_alarm, "false_alarm"),
            (d.confusion, "confusion"),
        ] {
            let want = c[theirs].as_f64().ok_or(theirs)?;
            assert!(
                (mine - want).abs() < 1e-6,
                "{name} collar {collar}: {theirs} {mine} vs pyannote.metrics {want}"
            );
        }
    }
    Ok(())
}
