//! Whisper speech recognition in candle: decoding, long-form, word timestamps.
//!
//! Not built yet (issue 5); this crate holds only its place in the workspace.
