//! The documents mica produces: transcript, speech regions, speaker turns, shots, analysis.
