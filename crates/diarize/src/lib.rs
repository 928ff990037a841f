//! Speaker diarization: local segmentation, speaker embeddings, clustering.
//!
//! Not built yet (issue 6); this crate holds only its place in the workspace.
