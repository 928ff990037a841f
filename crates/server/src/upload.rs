//! Request bodies: media spooled to a temporary file as it arrives (never held whole in
//! memory), JSON read into memory up to a small bound. Both stop at the size limit and on
//! a stalled upload.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// Largest JSON body (a path and nothing else).
pub const MAX_JSON: u64 = 64 * 1024;

/// Most bytes read and dropped from the body of a refused request.
const DISCARD: u64 = 16 << 20;

/// The 413 for a body over `limit` bytes.
pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than this server's limit of {limit} bytes"),
    )
}

fn stalled(stall: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "upload_timeout",
        format!("the upload sent nothing for {} s", stall.as_secs_f64()),
    )
}

/// A body read chunk by chunk, failing past `limit` bytes or when no chunk arrives
/// within `stall`.
struct Chunks {
    stream: axum::body::BodyDataStream,
    limit: u64,
    stall: Duration,
    total: u64,
}

impl Chunks {
    fn new(body: Body, limit: u64, stall: Duration) -> Chunks {
        Chunks {
            stream: body.into_data_stream(),
            limit,
            stall,
            total: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<axum::body::Bytes>, ApiError> {
        let next = tokio::time::timeout(self.stall, self.stream.next())
            .await
            .map_err(|_| stalled(self.stall))?;
        let Some(chunk) = next else { return Ok(None) };
        let chunk = chunk.map_err(|e| ApiError::input(format!("the upload broke off: {e}")))?;
        self.total += chunk.len() as u64;
        if self.total > self.limit {
            return Err(too_large(self.limit));
        }
        Ok(Some(chunk))
    }
}

/// Streams `body` into a new temporary file in `dir` (the system's when None), removed
/// when the returned handle drops. An empty body is a 400.
pub async fn spool(
    body: Body,
    limit: u64,
    stall: Duration,
    dir: Option<&Path>,
) -> Result<NamedTempFile, ApiError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("mica-upload-");
    let spool = match dir {
        Some(dir) => builder.tempfile_in(dir),
        None => builder.tempfile(),
    }
    .map_err(|e| ApiError::internal(format!("creating a temporary file: {e}")))?;
    let file = spool
        .as_file()
        .try_clone()
        .map_err(|e| ApiError::internal(format!("opening the temporary file: {e}")))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let write_failed = |e: std::io::Error| ApiError::internal(format!("spooling the upload: {e}"));
    let mut chunks = Chunks::new(body, limit, stall);
    while let Some(chunk) = chunks.next().await? {
        file.write_all(&chunk).await.map_err(write_failed)?;
    }
    file.flush().await.map_err(write_failed)?;
    if chunks.total == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the body is empty; send the media bytes, or JSON {\"path\": ...}",
        ));
    }
    Ok(spool)
}

/// Reads a small body (JSON) into memory.
pub async fn read_small(body: Body, stall: Duration) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut chunks = Chunks::new(body, MAX_JSON, stall);
    while let Some(chunk) = chunks.next().await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads and drops the body of a refused request, up to a bound: a client that sends the
/// whole body before it reads then gets the answer rather than a reset connection.
pub async fn discard(body: Body, stall: Duration) {
    let mut chunks = Chunks::new(body, DISCARD, stall.min(Duration::from_secs(5)));
    while let Ok(Some(_)) = chunks.next().await {}
}
