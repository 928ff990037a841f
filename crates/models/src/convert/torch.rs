//! torch checkpoints to safetensors: the zip format (torch >= 1.6) and the legacy format
//! (a sequence of pickles followed by raw storages).
//!
//! Pickles are parsed with `candle_core::pickle::Stack`; the tensor views are resolved
//! here rather than through `candle_core::pickle::read_all_with_key`, which skips tensors
//! it cannot read with only a line on stderr, ignores a key when the top object is not a
//! dict, and rejects non-contiguous views. Here every tensor of the state dict lands, in
//! its stored dtype (including BatchNorm running stats and `num_batches_tracked` i64
//! counters), with storage offsets and strides honoured, or the conversion fails.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use safetensors::Dtype;

use super::tensor::{
    ByteReader, OutTensor, TensorSet, candle_loadable, dtype_size, gather_strided,
};
use super::{ConvertError, read_file};

/// The legacy format's first pickle: the integer 0x1950a86a20f9469cfc6c (protocol 2,
/// LONG1 of 10 bytes).
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];
/// The legacy protocol version torch writes and reads.
const LEGACY_PROTOCOL: i64 = 1001;
/// A pickle over this size in a model checkpoint is a damaged file.
const MAX_PICKLE: u64 = 256 << 20;

/// A tensor view into a named storage.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    dtype: Dtype,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class: &str) -> Option<Dtype> {
    Some(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

fn parse_pickle(
    path: &Path,
    reader: &mut Cursor<&[u8]>,
    what: &str,
) -> Result<Object, ConvertError> {
    let at = reader.position();
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .and_then(|()| stack.finalize())
        .map_err(|e| {
            let reason = e.to_string();
            if reason.contains("failed to fill whole buffer") || reason.contains("UnexpectedEof") {
                ConvertError::Truncated {
                    path: path.to_path_buf(),
                    what: what.to_string(),
                    offset: at,
                    needed: 1,
                    available: 0,
                }
            } else {
                ConvertError::malformed(path, format!("{what} at offset {at}: {reason}"))
            }
        })
}

/// A dict's entries, looking through `BUILD` wrappers (an `OrderedDict` with state, a
/// scripted module's attributes).
fn dict_entries(obj: Object) -> Option<Vec<(Object, Object)>> {
    match obj {
        Object::Dict(entries) => Some(entries),
        Object::Build { callable, args } => match *callable {
            Object::Dict(entries) => Some(entries),
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                dict_entries(*args)
            }
            _ => None,
        },
        _ => None,
    }
}

fn key_text(key: &Object) -> Option<String> {
    match key {
        Object::Unicode(s) => Some(s.clone()),
        Object::Int(i) => Some(i.to_string()),
        Object::Long(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The object under `key` of the top-level dict (or the object itself without a key).
fn select(path: &Path, root: Object, key: Option<&str>) -> Result<Object, ConvertError> {
    let Some(key) = key else {
        return Ok(root);
    };
    let entries = dict_entries(root).ok_or_else(|| ConvertError::KeyNotFound {
        path: path.to_path_buf(),
        key: key.to_string(),
        available: vec!["(the checkpoint is not a dict)".into()],
    })?;
    let available: Vec<String> = entries.iter().filter_map(|(k, _)| key_text(k)).collect();
    entries
        .into_iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
        .map(|(_, v)| v)
        .ok_or_else(|| ConvertError::KeyNotFound {
            path: path.to_path_buf(),
            key: key.to_string(),
            available,
        })
}

fn is_rebuild(obj: &Object) -> bool {
    matches!(obj, Object::Reduce { callable, .. }
        if matches!(&**callable, Object::Class { module_name, class_name }
            if module_name.starts_with("torch") && class_name.starts_with("_rebuild")))
}

fn usize_of(obj: &Object) -> Option<usize> {
    match obj {
        Object::Int(i) => usize::try_from(*i).ok(),
        Object::Long(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn usizes(obj: &Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(items) | Object::List(items) => items.iter().map(usize_of).collect(),
        _ => None,
    }
}

/// Reads a `_rebuild_*` reduction into a view, following parameter and subclass wrappers.
fn tensor_ref(path: &Path, name: &str, obj: &Object) -> Result<TensorRef, ConvertError> {
    let bad = |reason: &str| ConvertError::Mapping {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let Object::Reduce { callable, args } = obj else {
        return Err(bad("not a tensor"));
    };
    let Object::Class { class_name, .. } = &**callable else {
        return Err(bad("not a tensor"));
    };
    let Object::Tuple(args) = &**args else {
        return Err(bad("tensor arguments are not a tuple"));
    };
    match class_name.as_str() {
        // (data, requires_grad, backward_hooks[, state])
        "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
            let inner = args.first().ok_or_else(|| bad("empty parameter"))?;
            tensor_ref(path, name, inner)
        }
        // (func, new_type, args, state): func applied to args.
        "_rebuild_from_type_v2" => {
            let (Some(func), Some(inner)) = (args.first(), args.get(2)) else {
                return Err(bad("short _rebuild_from_type_v2 arguments"));
            };
            let rebuilt = Object::Reduce {
                callable: Box::new(func.clone()),
                args: Box::new(inner.clone()),
            };
            tensor_ref(path, name, &rebuilt)
        }
        // (storage, storage_offset, size, stride, ...)
        "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3" => {
            let (Some(storage), Some(offset), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err(bad("short _rebuild_tensor arguments"));
            };
            let Object::PersistentLoad(pid) = storage else {
                return Err(bad("tensor storage is not a persistent id"));
            };
            let (key, dtype) = storage_id(pid)
                .ok_or_else(|| bad(&format!("unsupported storage reference {pid:?}")))?;
            let offset = usize_of(offset).ok_or_else(|| bad("bad storage offset"))?;
            let shape = usizes(size).ok_or_else(|| bad("bad size"))?;
            let stride = usizes(stride).ok_or_else(|| bad("bad (negative?) stride"))?;
            if shape.len() != stride.len() {
                return Err(bad("size and stride ranks differ"));
            }
            Ok(TensorRef {
                storage: key,
                dtype,
                offset,
                shape,
                stride,
            })
        }
        other => Err(bad(&format!("unsupported tensor constructor {other}"))),
    }
}

/// `('storage', StorageClass, key, location, numel[, view_metadata])` -> (key, dtype).
fn storage_id(pid: &Object) -> Option<(String, Dtype)> {
    let Object::Tuple(items) = pid else {
        return None;
    };
    match items.first()? {
        Object::Unicode(tag) if tag == "storage" => {}
        _ => return None,
    }
    let Object::Class { class_name, .. } = items.get(1)? else {
        return None;
    };
    let Object::Unicode(key) = items.get(2)? else {
        return None;
    };
    // Legacy storage views (view_metadata) predate torch 1.0 checkpoints we read.
    if let Some(view) = items.get(5)
        && *view != Object::None
    {
        return None;
    }
    Some((key.clone(), storage_dtype(class_name)?))
}

/// Flattens the (possibly nested) dict `obj` into named tensor views; nested dicts join
/// their keys with `.`.
fn tensor_refs(
    path: &Path,
    prefix: &str,
    obj: Object,
    out: &mut Vec<(String, TensorRef)>,
) -> Result<(), ConvertError> {
    if is_rebuild(&obj) {
        let name = prefix.to_string();
        let view = tensor_ref(path, &name, &obj)?;
        out.push((name, view));
        return Ok(());
    }
    let Some(entries) = dict_entries(obj) else {
        if !prefix.is_empty() {
            tracing::debug!(entry = prefix, "skipping non-tensor checkpoint entry");
        }
        return Ok(());
    };
    for (key, value) in entries {
        let Some(key) = key_text(&key) else {
            continue;
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        tensor_refs(path, &name, value, out)?;
    }
    Ok(())
}

/// The views of the selected state dict, in file order, refusing an empty result.
fn state_dict(
    path: &Path,
    root: Object,
    key: Option<&str>,
) -> Result<Vec<(String, TensorRef)>, ConvertError> {
    let selected = select(path, root, key)?;
    let mut refs = Vec::new();
    tensor_refs(path, "", selected, &mut refs)?;
    if refs.is_empty() {
        return Err(ConvertError::malformed(
            path,
            format!(
                "no tensors found{}",
                key.map(|k| format!(" under {k:?}")).unwrap_or_default()
            ),
        ));
    }
    Ok(refs)
}

/// Materialises every view from its storage bytes and writes the safetensors file.
fn write_tensors(
    path: &Path,
    refs: &[(String, TensorRef)],
    storages: &HashMap<String, Vec<u8>>,
    output: &Path,
    converter: &str,
    key: Option<&str>,
) -> Result<(), ConvertError> {
    let mut tensors = TensorSet::default();
    for (name, view) in refs {
        let storage = storages
            .get(&view.storage)
            .ok_or_else(|| ConvertError::Mapping {
                path: path.to_path_buf(),
                name: name.clone(),
                reason: format!("storage {} is missing", view.storage),
            })?;
        let data = gather_strided(
            storage,
            dtype_size(view.dtype),
            view.offset,
            &view.shape,
            &view.stride,
        )
        .ok_or_else(|| ConvertError::Mapping {
            path: path.to_path_buf(),
            name: name.clone(),
            reason: format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches past its storage of {} bytes",
                view.offset,
                view.shape,
                view.stride,
                storage.len()
            ),
        })?;
        let tensor = OutTensor {
            dtype: view.dtype,
            shape: view.shape.clone(),
            data,
        };
        tensors.insert(path, name.clone(), candle_loadable(tensor))?;
    }
    let extra: Vec<(&str, String)> = key
        .map(|k| ("mica.key", k.to_string()))
        .into_iter()
        .collect();
    tensors.write(output, path, converter, &extra)
}

/// Converts a torch zip checkpoint (`key` selects the state dict entry).
pub(super) fn convert_zip(
    path: &Path,
    key: Option<&str>,
    output: &Path,
) -> Result<(), ConvertError> {
    let file = std::fs::File::open(path).map_err(|e| ConvertError::io(path, e))?;
    let zip_err = |source| ConvertError::Zip {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_err)?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(zip_err)?;
    let pkl: Vec<&String> = names
        .iter()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .collect();
    let pkl = match pkl.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(ConvertError::malformed(
                path,
                "no data.pkl in the archive; not a torch checkpoint",
            ));
        }
        _ => {
            return Err(ConvertError::malformed(
                path,
                "several data.pkl in the archive (a TorchScript module?); not a plain checkpoint",
            ));
        }
    };
    let prefix = pkl.strip_suffix("data.pkl").unwrap_or_default().to_string();

    let file_len = std::fs::metadata(path)
        .map_err(|e| ConvertError::io(path, e))?
        .len();
    // Entries are read up to their declared size, which must be plausible for the file.
    let mut read_entry = |name: &str, limit: u64| -> Result<Vec<u8>, ConvertError> {
        let entry = archive.by_name(name).map_err(zip_err)?;
        let size = entry.size();
        if size > limit {
            return Err(ConvertError::malformed(
                path,
                format!("archive entry {name} claims {size} bytes"),
            ));
        }
        let mut bytes = Vec::new();
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| ConvertError::io(path, e))?;
        Ok(bytes)
    };
    let storage_limit = file_len.saturating_mul(1032);

    if names.iter().any(|n| *n == format!("{prefix}byteorder")) {
        let order = read_entry(&format!("{prefix}byteorder"), 64)?;
        if order.trim_ascii() != b"little" {
            return Err(ConvertError::malformed(
                path,
                "big-endian checkpoint; re-save it on a little-endian machine",
            ));
        }
    }
    let pickle = read_entry(&pkl, MAX_PICKLE.min(storage_limit))?;
    let root = parse_pickle(path, &mut Cursor::new(pickle.as_slice()), "data.pkl")?;
    let refs = state_dict(path, root, key)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, view) in &refs {
        if storages.contains_key(&view.storage) {
            continue;
        }
        let entry = format!("{prefix}data/{}", view.storage);
        if !names.contains(&entry) {
            return Err(ConvertError::Mapping {
                path: path.to_path_buf(),
                name: name.clone(),
                reason: format!("storage entry {entry} is missing from the archive"),
            });
        }
        let bytes = read_entry(&entry, storage_limit)?;
        storages.insert(view.storage.clone(), bytes);
    }
    write_tensors(path, &refs, &storages, output, "torch-zip", key)
}

/// Every storage a pickled object refers to, with its dtype.
fn storage_types(obj: &Object, out: &mut HashMap<String, Dtype>) {
    match obj {
        Object::PersistentLoad(pid) => {
            if let Some((key, dtype)) = storage_id(pid) {
                out.insert(key, dtype);
            }
        }
        Object::Tuple(items) | Object::List(items) => {
            items.iter().for_each(|o| storage_types(o, out));
        }
        Object::Dict(entries) => entries.iter().for_each(|(k, v)| {
            storage_types(k, out);
            storage_types(v, out);
        }),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            storage_types(callable, out);
            storage_types(args, out);
        }
        _ => {}
    }
}

/// Converts a legacy (pre-1.6) torch checkpoint (`key` selects the state dict entry).
pub(super) fn convert_legacy(
    path: &Path,
    key: Option<&str>,
    output: &Path,
) -> Result<(), ConvertError> {
    let bytes = read_file(path)?;
    // The magic is checked by bytes: it is a 10-byte integer that overflows the pickle
    // reader's i64.
    if !bytes.starts_with(&LEGACY_MAGIC) {
        if bytes.starts_with(b"PK\x03\x04") {
            return Err(ConvertError::malformed(
                path,
                "a zip-format torch checkpoint; use the torch-zip converter",
            ));
        }
        return Err(ConvertError::malformed(
            path,
            "no legacy torch magic number; not a legacy torch checkpoint",
        ));
    }
    let mut cursor = Cursor::new(bytes.as_slice());
    cursor.set_position(LEGACY_MAGIC.len() as u64);
    let protocol = parse_pickle(path, &mut cursor, "protocol version")?;
    match protocol {
        Object::Int(v) if i64::from(v) == LEGACY_PROTOCOL => {}
        Object::Long(v) if v == LEGACY_PROTOCOL => {}
        other => {
            return Err(ConvertError::UnsupportedVersion {
                path: path.to_path_buf(),
                format: "legacy torch",
                found: match other {
                    Object::Int(v) => v as u32,
                    _ => 0,
                },
                supported: LEGACY_PROTOCOL.to_string(),
            });
        }
    }
    let sys_info = parse_pickle(path, &mut cursor, "system info")?;
    if let Some(entries) = dict_entries(sys_info)
        && entries.iter().any(|(k, v)| {
            matches!(k, Object::Unicode(s) if s == "little_endian") && *v == Object::Bool(false)
        })
    {
        return Err(ConvertError::malformed(
            path,
            "big-endian checkpoint; re-save it on a little-endian machine",
        ));
    }
    let root = parse_pickle(path, &mut cursor, "checkpoint object")?;
    let keys_obj = parse_pickle(path, &mut cursor, "storage keys")?;
    let Object::List(keys) = keys_obj else {
        return Err(ConvertError::malformed(
            path,
            "storage key list is not a list",
        ));
    };
    let mut types = HashMap::new();
    storage_types(&root, &mut types);
    let refs = state_dict(path, root, key)?;
    let wanted: std::collections::HashSet<&str> =
        refs.iter().map(|(_, v)| v.storage.as_str()).collect();

    // Storages follow in key order: u64 element count, then the elements.
    let mut r = ByteReader::new(path, &bytes);
    r.bytes(cursor.position() as usize, "pickles")?;
    let mut storages = HashMap::new();
    for key_obj in &keys {
        let Object::Unicode(storage) = key_obj else {
            return Err(ConvertError::malformed(path, "storage key is not a string"));
        };
        let dtype = types.get(storage).copied().ok_or_else(|| {
            ConvertError::malformed(path, format!("storage {storage} has no known type"))
        })?;
        let count = r.u64(&format!("size of storage {storage}"))?;
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype_size(dtype)))
            .ok_or_else(|| {
                ConvertError::malformed(path, format!("storage {storage}: {count} elements"))
            })?;
        let data = r.bytes(len, &format!("data of storage {storage}"))?;
        if wanted.contains(storage.as_str()) {
            storages.insert(storage.clone(), data.to_vec());
        }
    }
    write_tensors(path, &refs, &storages, output, "torch-legacy", key)
}
