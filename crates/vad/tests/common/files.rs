//! The recordings of the golden tests, shared with `examples/dump_audio.rs`.

/// The golden recordings: (name, asset, file); the order of `scripts/golden.py`.
pub const FILES: [(&str, &str, &str); 7] = [
    ("jfk", "jfk", "jfk.wav"),
    ("librivox-0870", "librivox", "0870.wav"),
    ("librivox-0880", "librivox", "0880.wav"),
    ("librivox-0890", "librivox", "0890.wav"),
    ("librivox-0920", "librivox", "0920.wav"),
    ("librivox-0930", "librivox", "0930.wav"),
    ("pyannote-sample", "pyannote-sample", "sample.wav"),
];
