//! Silero VAD v6 in candle: batched and streaming speech probabilities, speech timestamps.
//!
//! Not built yet (issue 4); this crate holds only its place in the workspace.
