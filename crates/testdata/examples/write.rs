//! Writes the long sets for the peers' benches (long-english, the same with silent pauses,
//! long-voices): `NAME.wav`, `NAME.rttm` and `NAME.txt` (the English words, one utterance
//! per line) in the directory given.
//!
//! `cargo run --release -p mica-testdata --example write -- DIR`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: write DIR")?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let english = mica_testdata::long_english()?;
    let silent = english.with_silent_pauses();
    for set in [english, silent, mica_testdata::long_voices()?] {
        set.write_wav(&dir.join(format!("{}.wav", set.name)))?;
        std::fs::write(dir.join(format!("{}.rttm", set.name)), set.rttm())?;
        std::fs::write(dir.join(format!("{}.txt", set.name)), set.english_text())?;
        println!(
            "{}: {:.1} s, {} utterances, {} speakers",
            set.name,
            set.duration(),
            set.utterances.len(),
            set.speakers()
        );
    }
    Ok(())
}
