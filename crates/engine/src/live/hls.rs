//! [`HlsSubtitles`]: a rolling WebVTT subtitle playlist (HLS) written from a live session's
//! events, for a player to load beside the stream.
//!
//! Stream time is cut into segments of [`HlsOptions::segment_seconds`]. A segment is
//! written once the words that start inside it have settled: its end is behind the audio
//! received by [`HlsOptions::settle_seconds`] and no word shown in the latest partial
//! starts before its end, or, whatever is still unsettled, [`HlsOptions::max_wait_seconds`]
//! after its end. A word settled later than that goes into the next segment written, so no
//! word is lost. The playlist lists the latest [`HlsOptions::playlist_segments`], each
//! with its wall-clock time (`EXT-X-PROGRAM-DATE-TIME`, the moment its audio arrived);
//! each segment maps its cue times to MPEG-TS time through `X-TIMESTAMP-MAP`. Files are
//! replaced atomically (written beside, then renamed), so a player never reads half of one.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mica_core::document::{SpeakerTurn, Word};
use mica_core::writers::{WriterOptions, subtitle};
use serde::{Deserialize, Serialize};

use super::{LiveEvent, settled_transcript};
use crate::Error;

/// The playlist's file name in the output directory.
pub const PLAYLIST: &str = "subtitles.m3u8";

/// How the playlist is cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HlsOptions {
    /// Seconds of stream time per segment (Apple recommends 6).
    pub segment_seconds: f64,
    /// Segments the playlist lists (older segment files are removed).
    pub playlist_segments: usize,
    /// A segment waits until this much audio past its end has arrived.
    pub settle_seconds: f64,
    /// ... and at most this long for words still unsettled before its end.
    pub max_wait_seconds: f64,
    /// MPEG-TS time (90 kHz ticks) of stream time 0, written in each segment's
    /// `X-TIMESTAMP-MAP`: the presentation time of the stream's first audio, when known.
    pub mpegts_start: u64,
}

impl Default for HlsOptions {
    fn default() -> Self {
        HlsOptions {
            segment_seconds: 6.0,
            playlist_segments: 10,
            settle_seconds: 1.0,
            max_wait_seconds: 6.0,
            mpegts_start: 0,
        }
    }
}

impl HlsOptions {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Options(what.to_string()));
        if !(1.0..=60.0).contains(&self.segment_seconds) {
            return bad("HLS segments must be 1 to 60 seconds");
        }
        if !(1..=1000).contains(&self.playlist_segments) {
            return bad("an HLS playlist lists 1 to 1000 segments");
        }
        if !(0.0..=30.0).contains(&self.settle_seconds)
            || !(self.settle_seconds..=120.0).contains(&self.max_wait_seconds)
        {
            return bad("an HLS segment waits 0 to 30 s to settle, and at most 120 s");
        }
        Ok(())
    }
}

/// Writes the segments and the playlist of one live session into a directory.
#[derive(Debug)]
pub struct HlsSubtitles {
    dir: PathBuf,
    options: HlsOptions,
    /// Settled words not yet written, with their utterance.
    words: Vec<(Word, u64)>,
    /// Speaker labels received (cues get the speaker of their words).
    turns: Vec<SpeakerTurn>,
    /// Start of the first word of the latest partial: speech not settled yet.
    unsettled_from: Option<f64>,
    /// Seconds of audio received.
    received: f64,
    /// Wall-clock time of stream time 0.
    origin: Option<SystemTime>,
    /// The next segment's number.
    next: u64,
    /// Segments listed: number and wall-clock start.
    listed: VecDeque<(u64, SystemTime)>,
    ended: bool,
}

impl HlsSubtitles {
    /// Writes into `dir` (created if missing): an empty playlist at once, so a player can
    /// be pointed at it before the first words.
    pub fn create(dir: impl Into<PathBuf>, options: HlsOptions) -> Result<HlsSubtitles, Error> {
        options.validate()?;
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let hls = HlsSubtitles {
            dir,
            options,
            words: Vec::new(),
            turns: Vec::new(),
            unsettled_from: None,
            received: 0.0,
            origin: None,
            next: 0,
            listed: VecDeque::new(),
            ended: false,
        };
        hls.write_playlist()?;
        Ok(hls)
    }

    /// The playlist's path.
    pub fn playlist(&self) -> PathBuf {
        self.dir.join(PLAYLIST)
    }

    /// Takes one event of the session; writes the segments it completes.
    pub fn on_event(&mut self, event: &LiveEvent) -> Result<(), Error> {
        let at = match event {
            LiveEvent::Final(c) => {
                self.words
                    .extend(c.words.iter().map(|w| (w.clone(), c.utterance)));
                if c.end_of_utterance {
                    self.unsettled_from = None;
                }
                c.at
            }
            LiveEvent::Partial(c) => {
                self.unsettled_from = c.words.first().map(|w| w.start);
                c.at
            }
            LiveEvent::Speaker(l) => {
                self.turns.push(SpeakerTurn {
                    start: l.start,
                    end: l.end,
                    speaker: l.speaker.clone(),
                });
                l.at
            }
            LiveEvent::Status { state, at, .. } => {
                if state == "ended" {
                    return self.finish(*at);
                }
                *at
            }
        };
        self.advance(at)
    }

    fn advance(&mut self, at: f64) -> Result<(), Error> {
        if self.origin.is_none() {
            self.origin = SystemTime::now().checked_sub(Duration::from_secs_f64(at.max(0.0)));
        }
        self.received = self.received.max(at);
        let d = self.options.segment_seconds;
        loop {
            let end = (self.next + 1) as f64 * d;
            let settled = self.received >= end + self.options.settle_seconds
                && self.unsettled_from.is_none_or(|s| s >= end);
            if !(settled || self.received >= end + self.options.max_wait_seconds) {
                return Ok(());
            }
            self.write_segment(end, false)?;
        }
    }

    /// The stream ended at `at`: writes every word left and closes the playlist.
    fn finish(&mut self, at: f64) -> Result<(), Error> {
        if self.ended {
            return Ok(());
        }
        self.received = self.received.max(at);
        let d = self.options.segment_seconds;
        let last_word = self.words.last().map_or(0.0, |(w, _)| w.end);
        let until = self.received.max(last_word);
        while (self.next as f64) * d < until {
            let end = (self.next + 1) as f64 * d;
            self.write_segment(end, true)?;
        }
        self.ended = true;
        self.write_playlist()
    }

    /// Writes the next segment: every word left that starts before `end` (all of them on
    /// the last one).
    fn write_segment(&mut self, end: f64, last: bool) -> Result<(), Error> {
        let number = self.next;
        let start = number as f64 * self.options.segment_seconds;
        let take = self
            .words
            .iter()
            .take_while(|(w, _)| w.start < end || last)
            .count();
        let words: Vec<(Word, u64)> = self.words.drain(..take).collect();
        let mut body = format!(
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{},LOCAL:00:00:00.000\n\n",
            self.options.mpegts_start
        )
        .into_bytes();
        let cues = subtitle::cues(
            &settled_transcript(&words, end),
            Some(&self.turns),
            &WriterOptions::default(),
        )
        .map_err(|e| Error::Options(format!("writing subtitle cues: {e}")))?;
        subtitle::write_vtt_cues(&cues, &mut body)
            .map_err(|e| Error::Options(format!("writing subtitle cues: {e}")))?;
        replace(&self.dir.join(segment_name(number)), &body)?;
        // Speaker labels of written words are no longer needed.
        if let Some(last_end) = words.last().map(|(w, _)| w.end) {
            self.turns.retain(|t| t.end > last_end);
        }
        let origin = self.origin.unwrap_or_else(SystemTime::now);
        let wall = origin + Duration::from_secs_f64(start);
        self.listed.push_back((number, wall));
        self.next += 1;
        while self.listed.len() > self.options.playlist_segments {
            self.listed.pop_front();
        }
        // Files a little older than the playlist stay, for players still fetching them.
        if let Some(old) = number.checked_sub(self.options.playlist_segments as u64 + 3) {
            let _ = std::fs::remove_file(self.dir.join(segment_name(old)));
        }
        self.write_playlist()
    }

    fn write_playlist(&self) -> Result<(), Error> {
        let d = self.options.segment_seconds;
        let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
        text.push_str(&format!("#EXT-X-TARGETDURATION:{}\n", d.ceil() as u64));
        let first = self.listed.front().map_or(self.next, |(n, _)| *n);
        text.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n"));
        for (number, wall) in &self.listed {
            text.push_str(&format!(
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{d:.3},\n{}\n",
                humantime::format_rfc3339_millis(*wall),
                segment_name(*number)
            ));
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        replace(&self.playlist(), text.as_bytes())
    }
}

fn segment_name(number: u64) -> String {
    format!("subtitles{number:06}.vtt")
}

/// Writes `bytes` to `path` by way of a file beside it, renamed over it.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| Error::Io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Caption;

    fn word(text: &str, start: f64, end: f64) -> Word {
        Word {
            text: text.into(),
            start,
            end,
            probability: 0.9,
        }
    }

    fn caption(words: Vec<Word>, at: f64, utterance: u64, end_of_utterance: bool) -> Caption {
        Caption {
            utterance,
            start: words.first().map_or(at, |w| w.start),
            end: words.last().map_or(at, |w| w.end),
            text: words.iter().map(|w| w.text.as_str()).collect(),
            words,
            at,
            end_of_utterance,
        }
    }

    #[test]
    fn segments_wait_for_their_words_and_lose_none() -> Result<(), Error> {
        let dir = tempfile::tempdir()?;
        let mut hls = HlsSubtitles::create(dir.path(), HlsOptions::default())?;
        let playlist = || std::fs::read_to_string(dir.path().join(PLAYLIST)).unwrap();
        assert!(playlist().contains("#EXT-X-MEDIA-SEQUENCE:0"));
        assert!(!playlist().contains("#EXTINF"));
        hls.on_event(&LiveEvent::Final(caption(
            vec![word(" Good", 1.0, 1.4), word(" evening.", 1.4, 2.0)],
            2.5,
            1,
            false,
        )))?;
        // A word spoken at 5.5 s is still being heard at 7.5 s: segment 0 waits.
        hls.on_event(&LiveEvent::Partial(caption(
            vec![word(" Tonight", 5.5, 6.2)],
            7.5,
            1,
            false,
        )))?;
        assert!(!playlist().contains("#EXTINF"));
        hls.on_event(&LiveEvent::Final(caption(
            vec![word(" Tonight", 5.5, 6.2), word(" news", 6.2, 6.6)],
            8.0,
            1,
            true,
        )))?;
        let segment = std::fs::read_to_string(dir.path().join("subtitles000000.vtt"))?;
        assert!(segment.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,"));
        assert!(segment.contains("Good evening. Tonight"), "{segment}");
        assert!(playlist().contains("#EXTINF:6.000,\nsubtitles000000.vtt"));
        // Words settled after their segment was written go into the next one.
        hls.on_event(&LiveEvent::Status {
            state: "listening".into(),
            at: 19.5,
            message: None,
        })?;
        hls.on_event(&LiveEvent::Final(caption(
            vec![word(" late", 10.0, 10.5)],
            20.0,
            2,
            true,
        )))?;
        hls.on_event(&LiveEvent::Status {
            state: "ended".into(),
            at: 21.0,
            message: None,
        })?;
        let all: String = (0..4)
            .map(|n| std::fs::read_to_string(dir.path().join(segment_name(n))).unwrap())
            .collect();
        for w in ["Good evening.", "news", "late"] {
            assert_eq!(all.matches(w).count(), 1, "{w} in {all}");
        }
        assert!(playlist().ends_with("#EXT-X-ENDLIST\n"), "{}", playlist());
        Ok(())
    }

    #[test]
    fn the_playlist_rolls_and_old_segments_go() -> Result<(), Error> {
        let dir = tempfile::tempdir()?;
        let options = HlsOptions {
            segment_seconds: 2.0,
            playlist_segments: 3,
            ..HlsOptions::default()
        };
        let mut hls = HlsSubtitles::create(dir.path(), options)?;
        hls.on_event(&LiveEvent::Status {
            state: "listening".into(),
            at: 40.0,
            message: None,
        })?;
        let playlist = std::fs::read_to_string(dir.path().join(PLAYLIST))?;
        assert_eq!(playlist.matches("#EXTINF").count(), 3, "{playlist}");
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:16"), "{playlist}");
        assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{playlist}");
        assert!(!dir.path().join(segment_name(0)).exists());
        assert!(dir.path().join(segment_name(18)).exists());
        assert!(
            HlsSubtitles::create(
                dir.path(),
                HlsOptions {
                    segment_seconds: 0.0,
                    ..HlsOptions::default()
                }
            )
            .is_err()
        );
        Ok(())
    }
}
