//! numpy `.npz` (a zip of `.npy` files, stored or deflated) to safetensors: each entry
//! `NAME.npy` becomes tensor `NAME` with its shape and dtype. Whisper's `mel_filters.npz`
//! gives `mel_80` [80, 201] and `mel_128` [128, 201], f32.

use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::ConvertError;
use super::tensor::{
    ByteReader, OutTensor, TensorSet, candle_loadable, dtype_size, gather_strided, numel,
};

const MAGIC: &[u8] = b"\x93NUMPY";
/// A real npy header is a few hundred bytes; a larger one is a damaged file.
const MAX_HEADER: usize = 1 << 20;

/// Converts the `.npz` at `path` into `output/model.safetensors`.
pub(super) fn convert(path: PathBuf, output: &Path) -> Result<(), ConvertError> {
    let file = std::fs::File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| ConvertError::io(&path, e))?
        .len();
    let zip_err = |source| ConvertError::Zip {
        path: path.clone(),
        source,
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut tensors = TensorSet::default();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let entry_name = entry.name().map_err(zip_err)?.into_owned();
        let Some(name) = entry_name.strip_suffix(".npy") else {
            tracing::debug!(entry = entry_name, "skipping non-npy npz entry");
            continue;
        };
        // Deflate can expand a lot, but not past this; a larger claim is a damaged file.
        let limit = file_len.saturating_mul(1032).max(1 << 20);
        let size = entry.size();
        if size > limit {
            return Err(ConvertError::malformed(
                &path,
                format!("{entry_name} claims {size} bytes"),
            ));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| ConvertError::io(&path, e))?;
        let tensor = parse_npy(&path, &entry_name, &bytes)?;
        tensors.insert(&path, name.to_string(), candle_loadable(tensor))?;
    }
    if tensors.len() == 0 {
        return Err(ConvertError::malformed(&path, "no .npy entries"));
    }
    tensors.write(output, &path, "npz", &[])
}

fn descr_dtype(descr: &str) -> Option<Dtype> {
    let (order, code) = descr.split_at_checked(1)?;
    if !matches!(order, "<" | "|" | "=") {
        // Big-endian data would need swapping; numpy never writes it by default.
        return None;
    }
    Some(match code {
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i1" => Dtype::I8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "u1" => Dtype::U8,
        "u4" => Dtype::U32,
        "b1" => Dtype::BOOL,
        _ => return None,
    })
}

/// The text after `'key':` in a numpy header dict.
fn header_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn parse_header(header: &str) -> Option<(String, bool, Vec<usize>)> {
    let descr = header_value(header, "descr")?;
    let quote = descr.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let descr = descr[1..].split(quote).next()?.to_string();
    let fortran = header_value(header, "fortran_order")?;
    let fortran = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return None;
    };
    let shape = header_value(header, "shape")?.strip_prefix('(')?;
    let shape = shape.split(')').next()?;
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()?;
    Some((descr, fortran, dims))
}

/// Parses one `.npy` file into a row-major tensor.
pub(super) fn parse_npy(path: &Path, entry: &str, bytes: &[u8]) -> Result<OutTensor, ConvertError> {
    let mut r = ByteReader::new(path, bytes);
    let what = |s: &str| format!("{s} of {entry}");
    if r.bytes(MAGIC.len(), &what("npy magic"))? != MAGIC {
        return Err(ConvertError::malformed(
            path,
            format!("{entry} is not a .npy file"),
        ));
    }
    let major = r.u8(&what("npy version"))?;
    let _minor = r.u8(&what("npy version"))?;
    let header_len = match major {
        1 => usize::from(r.u16(&what("header length"))?),
        2 | 3 => r.u32(&what("header length"))? as usize,
        v => {
            return Err(ConvertError::UnsupportedVersion {
                path: path.to_path_buf(),
                format: "npy",
                found: u32::from(v),
                supported: "1, 2, 3".into(),
            });
        }
    };
    if header_len > MAX_HEADER {
        return Err(ConvertError::malformed(
            path,
            format!("{entry}: header of {header_len} bytes"),
        ));
    }
    let header = r.bytes(header_len, &what("npy header"))?;
    let header = std::str::from_utf8(header)
        .map_err(|_| ConvertError::malformed(path, format!("{entry}: header is not text")))?;
    let (descr, fortran, shape) = parse_header(header).ok_or_else(|| {
        ConvertError::malformed(path, format!("{entry}: unreadable header {header:?}"))
    })?;
    let dtype = descr_dtype(&descr).ok_or_else(|| ConvertError::UnsupportedDtype {
        path: path.to_path_buf(),
        tensor: entry.to_string(),
        dtype: format!("numpy {descr}"),
    })?;
    let elem = dtype_size(dtype);
    let size = numel(&shape)
        .and_then(|n| n.checked_mul(elem))
        .ok_or_else(|| ConvertError::malformed(path, format!("{entry}: shape {shape:?}")))?;
    let data = r.bytes(size, &what("npy data"))?;
    let data = if fortran && shape.len() > 1 {
        // Column-major: axis i steps over the product of the axes before it.
        let mut strides = Vec::with_capacity(shape.len());
        let mut step = 1usize;
        for &d in &shape {
            strides.push(step);
            step = step.saturating_mul(d);
        }
        gather_strided(data, elem, 0, &shape, &strides)
            .ok_or_else(|| ConvertError::malformed(path, format!("{entry}: bad fortran view")))?
    } else {
        data.to_vec()
    };
    Ok(OutTensor { dtype, shape, data })
}
