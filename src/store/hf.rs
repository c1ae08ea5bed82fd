//! HuggingFace BERT checkpoints read into bertlu's Transformer: `config.json` → [`Config`],
//! `tokenizer.json` (or `vocab.txt` + `tokenizer_config.json`) → the tokenizer with the
//! vocabulary's own special ids, `model.safetensors` → the backbone and, when the checkpoint
//! has `cls.predictions.*`, the masked-LM head. bertlu's Transformer is BERT's post-LN encoder,
//! so every tensor maps by name (PyTorch's `[out, in]` linear weights transposed on the way);
//! each is shape-checked, and a setting bertlu cannot reproduce is an error naming its
//! `config.json` field.

use super::layout::{HF_CONFIG_FILE, HF_PICKLE_WEIGHTS_FILE, HF_TOKENIZER_CONFIG_FILE, HF_VOCAB_FILE, HF_WEIGHTS_FILE, TOKENIZER_FILE};
use crate::config::{Activation, BackboneKind, Config, Objective, Preset, BERT_LAYER_NORM_EPS};
use crate::model::PretrainModel;
use crate::text::tokenizer::WordPieceTokenizer;
use anyhow::{bail, Context, Result};
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;
use std::path::Path;

/// HuggingFace BERT tensor names → bertlu's (applied in order; the `bert.` prefix of
/// `BertForPreTraining` and `BertModel` checkpoints alike is dropped first).
const KEY_MAP: &[(&str, &str)] = &[
    (r"^bert\.", ""),
    (r"^embeddings\.word_embeddings\.weight$", "backbone.Transformer.token_embedding.weight"),
    (r"^embeddings\.position_embeddings\.weight$", "backbone.Transformer.position_embedding.weight"),
    (r"^embeddings\.token_type_embeddings\.weight$", "backbone.Transformer.segment_embedding.weight"),
    (r"^embeddings\.LayerNorm\.(weight|gamma)$", "backbone.Transformer.embed_norm.gamma"),
    (r"^embeddings\.LayerNorm\.(bias|beta)$", "backbone.Transformer.embed_norm.beta"),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", "backbone.Transformer.encoder.layers.${1}.mha.${2}.${3}"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", "backbone.Transformer.encoder.layers.${1}.mha.output.${2}"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|gamma)$", "backbone.Transformer.encoder.layers.${1}.norm_1.gamma"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(bias|beta)$", "backbone.Transformer.encoder.layers.${1}.norm_1.beta"),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$", "backbone.Transformer.encoder.layers.${1}.pwff.linear_inner.${2}"),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$", "backbone.Transformer.encoder.layers.${1}.pwff.linear_outer.${2}"),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|gamma)$", "backbone.Transformer.encoder.layers.${1}.norm_2.gamma"),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.(bias|beta)$", "backbone.Transformer.encoder.layers.${1}.norm_2.beta"),
    (r"^cls\.predictions\.transform\.dense\.(weight|bias)$", "mlm.transform.${1}"),
    (r"^cls\.predictions\.transform\.LayerNorm\.(weight|gamma)$", "mlm.norm.gamma"),
    (r"^cls\.predictions\.transform\.LayerNorm\.(bias|beta)$", "mlm.norm.beta"),
    (r"^cls\.predictions\.bias$", "mlm.bias"),
    (r"^pooler\.dense\.(weight|bias)$", "nsp.dense.${1}"),
    (r"^cls\.seq_relationship\.(weight|bias)$", "nsp.output.${1}"),
];

/// A HuggingFace checkpoint read into a bertlu pre-trained model.
pub struct HfImport {
    /// The bertlu config the checkpoint's `config.json` describes.
    pub config: Config,
    /// Its tokenizer.
    pub tokenizer: WordPieceTokenizer,
    /// Backbone (and masked-LM head) with the checkpoint's weights.
    pub model: PretrainModel,
    /// The bertlu tensors loaded from it.
    pub loaded: Vec<String>,
    /// The checkpoint's tensors bertlu has no place for, by their names there.
    pub unused: Vec<String>,
    /// Whether the masked-LM head came from the checkpoint (else it starts at random).
    pub mlm_head: bool,
    /// What became of BERT's pooler and next-sentence head.
    pub nsp_head: NspImport,
}

/// BERT's pooler (`bert.pooler.dense`) is bertlu's next-sentence head's dense + tanh; its
/// `cls.seq_relationship` is that head's output, with the two classes in the other order
/// (HuggingFace: 0 = B follows A; bertlu: 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NspImport {
    /// No pooler: no next-sentence head (and no `--pooling pooler`).
    Absent,
    /// The pooler, with a fresh output layer (the checkpoint has no `cls.seq_relationship`).
    PoolerOnly,
    /// Pooler and output.
    Complete,
}

/// Swaps the two output classes of a next-sentence head (HuggingFace's order ↔ bertlu's).
pub fn swap_nsp_classes(mut model: PretrainModel) -> PretrainModel {
    if let Some(nsp) = model.nsp.as_mut() {
        let out = &mut nsp.output;
        let device = out.weight.val().device();
        let order = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        out.weight = Param::from_tensor(out.weight.val().select(1, order.clone()));
        if let Some(b) = out.bias.take() {
            out.bias = Some(Param::from_tensor(b.val().select(0, order)));
        }
    }
    model
}

/// The bertlu config of a HuggingFace BERT `config.json`; `vocab_size` is the checkpoint's.
pub fn config_from_hf(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read (not a HuggingFace checkpoint?)", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let field = |name: &str| -> Result<&Value> { v.get(name).ok_or_else(|| anyhow::anyhow!("{}: field `{name}` is missing", path.display())) };
    let size = |name: &str| -> Result<usize> {
        field(name)?.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| anyhow::anyhow!("{}: field `{name}` must be a positive integer", path.display()))
    };
    let model_type = field("model_type")?.as_str().unwrap_or_default();
    if model_type != "bert" {
        bail!("{}: field `model_type` is \"{model_type}\"; bertlu reads BERT checkpoints (\"bert\")", path.display());
    }
    let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu");
    let activation = match act {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        _ => bail!("{}: field `hidden_act` is \"{act}\"; bertlu computes \"gelu\" (exact) and \"gelu_new\" / \"gelu_pytorch_tanh\" (tanh)", path.display()),
    };
    if let Some(p) = v.get("position_embedding_type").and_then(Value::as_str).filter(|&p| p != "absolute") {
        bail!("{}: field `position_embedding_type` is \"{p}\"; bertlu has learned absolute positions only", path.display());
    }
    let eps = v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(BERT_LAYER_NORM_EPS);
    if !(eps > 0.0 && eps < 1.0) {
        bail!("{}: field `layer_norm_eps` is {eps}; it must be within (0, 1)", path.display());
    }
    let type_vocab = v.get("type_vocab_size").and_then(Value::as_u64).unwrap_or(2);
    if type_vocab != 2 {
        bail!("{}: field `type_vocab_size` is {type_vocab}; bertlu has two segments (a pair's A and B)", path.display());
    }
    let mut cfg = Config::preset(Preset::Small).with_backbone(BackboneKind::Transformer);
    let m = &mut cfg.model;
    m.d_model = size("hidden_size")?;
    m.transformer.n_heads = size("num_attention_heads")?;
    m.transformer.n_layers = size("num_hidden_layers")?;
    m.transformer.d_ff = size("intermediate_size")?;
    m.max_len = size("max_position_embeddings")?;
    m.max_positions = m.max_len;
    m.vocab_size = size("vocab_size")?;
    m.type_vocab_size = 2;
    m.dropout = v.get("hidden_dropout_prob").and_then(Value::as_f64).unwrap_or(0.1);
    m.transformer.norm_first = false;
    m.transformer.activation = activation;
    m.transformer.layer_norm_eps = eps;
    // BERT's feed-forward block has no dropout after its activation
    m.transformer.activation_dropout = Some(0.0);
    cfg.validate().with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}

/// The tokenizer of a HuggingFace checkpoint directory: its `tokenizer.json`, or else its
/// `vocab.txt` with `tokenizer_config.json`'s `do_lower_case` (default true).
pub fn tokenizer_from_hf(dir: &Path) -> Result<WordPieceTokenizer> {
    let json = dir.join(TOKENIZER_FILE);
    if json.exists() {
        return WordPieceTokenizer::load(&json);
    }
    let vocab = dir.join(HF_VOCAB_FILE);
    let text = std::fs::read_to_string(&vocab).with_context(|| format!("{}: no {TOKENIZER_FILE} and no readable {HF_VOCAB_FILE}", dir.display()))?;
    let tokens: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_owned()).collect();
    let settings = dir.join(HF_TOKENIZER_CONFIG_FILE);
    let lowercase = match std::fs::read_to_string(&settings) {
        Ok(t) => serde_json::from_str::<Value>(&t).with_context(|| format!("{}: invalid JSON", settings.display()))?.get("do_lower_case").and_then(Value::as_bool).unwrap_or(true),
        Err(_) => true,
    };
    WordPieceTokenizer::from_vocab_list(&tokens, lowercase).with_context(|| format!("{}", vocab.display()))
}

/// Reads the checkpoint in `dir` onto `device`.
pub fn import(dir: &Path, device: &Device) -> Result<HfImport> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let config = config_from_hf(&dir.join(HF_CONFIG_FILE))?;
    let tokenizer = tokenizer_from_hf(dir)?;
    if tokenizer.vocab_size() != config.model.vocab_size {
        bail!("{}: the tokenizer has {} entries but field `vocab_size` is {}", dir.join(HF_CONFIG_FILE).display(), tokenizer.vocab_size(), config.model.vocab_size);
    }
    let weights = dir.join(HF_WEIGHTS_FILE);
    if !weights.exists() {
        if dir.join(HF_PICKLE_WEIGHTS_FILE).exists() {
            bail!("{}: only {HF_PICKLE_WEIGHTS_FILE} here; save it as {HF_WEIGHTS_FILE} first (python: `AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`)", dir.display());
        }
        bail!("{}: no {HF_WEIGHTS_FILE}", dir.display());
    }
    let mut config = config;
    let mut model = PretrainModel::init(&config.model, &[Objective::Mlm, Objective::Nsp], device);
    let mut store = SafetensorsStore::from_file(&weights).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true);
    for (from, to) in KEY_MAP {
        store = store.with_key_remapping(*from, *to);
    }
    let result = model.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: cannot read weights: {}", weights.display(), e.to_string().replace('\n', " ")))?;
    if let Some(e) = result.errors.first() {
        bail!("{}: {} tensor(s) do not fit the model described by config.json, first: {}", weights.display(), result.errors.len(), format!("{e:?}").replace('\n', " "));
    }
    let missing: Vec<&str> = result.missing.iter().map(|(path, _)| path.as_str()).collect();
    let head = |prefix: &str| missing.iter().filter(|p| p.starts_with(prefix)).count();
    let (head_missing, pooler_missing, output_missing) = (head("mlm."), head("nsp.dense."), head("nsp.output."));
    if let Some(first) = missing.iter().find(|p| !p.starts_with("mlm.") && !p.starts_with("nsp.")) {
        bail!("{}: {} backbone tensor(s) missing, first: {first}", weights.display(), missing.len() - head_missing - pooler_missing - output_missing);
    }
    let head_total = model.mlm.as_ref().map_or(0, |h| burn::module::list_param_ids(h).len());
    if head_missing != 0 && head_missing != head_total {
        bail!("{}: the masked-LM head is incomplete ({head_missing} of its {head_total} tensors missing, first: {})", weights.display(), missing[0]);
    }
    if pooler_missing == 1 || output_missing == 1 {
        bail!("{}: the pooler or next-sentence output is incomplete (a weight without its bias or the reverse)", weights.display());
    }
    let nsp_head = match (pooler_missing, output_missing) {
        (0, 0) => NspImport::Complete,
        (0, _) => NspImport::PoolerOnly,
        _ => NspImport::Absent,
    };
    match nsp_head {
        NspImport::Absent => model.nsp = None,
        NspImport::Complete => model = swap_nsp_classes(model),
        NspImport::PoolerOnly => {}
    }
    config.pretrain.tasks = if model.nsp.is_some() { vec![Objective::Mlm, Objective::Nsp] } else { vec![Objective::Mlm] };
    let mut loaded = result.applied.clone();
    loaded.sort();
    let mut unused = result.unused.clone();
    unused.sort();
    Ok(HfImport { config, tokenizer, model, loaded, unused, mlm_head: head_missing == 0, nsp_head })
}

/// bertlu tensor names → HuggingFace BERT's, for export (applied in order, after Burn's linear
/// weights are transposed to PyTorch's `[out, in]`).
const EXPORT_MAP: &[(&str, &str)] = &[
    (r"^backbone\.(Transformer\.)?token_embedding\.weight$", "bert.embeddings.word_embeddings.weight"),
    (r"^backbone\.(Transformer\.)?position_embedding\.weight$", "bert.embeddings.position_embeddings.weight"),
    (r"^backbone\.(Transformer\.)?segment_embedding\.weight$", "bert.embeddings.token_type_embeddings.weight"),
    (r"^backbone\.(Transformer\.)?embed_norm\.(weight|gamma)$", "bert.embeddings.LayerNorm.weight"),
    (r"^backbone\.(Transformer\.)?embed_norm\.(bias|beta)$", "bert.embeddings.LayerNorm.bias"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.mha\.(query|key|value)\.(weight|bias)$", "bert.encoder.layer.${2}.attention.self.${3}.${4}"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.mha\.output\.(weight|bias)$", "bert.encoder.layer.${2}.attention.output.dense.${3}"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.norm_1\.(weight|gamma)$", "bert.encoder.layer.${2}.attention.output.LayerNorm.weight"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.norm_1\.(bias|beta)$", "bert.encoder.layer.${2}.attention.output.LayerNorm.bias"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.pwff\.linear_inner\.(weight|bias)$", "bert.encoder.layer.${2}.intermediate.dense.${3}"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.pwff\.linear_outer\.(weight|bias)$", "bert.encoder.layer.${2}.output.dense.${3}"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.norm_2\.(weight|gamma)$", "bert.encoder.layer.${2}.output.LayerNorm.weight"),
    (r"^backbone\.(Transformer\.)?encoder\.layers\.(\d+)\.norm_2\.(bias|beta)$", "bert.encoder.layer.${2}.output.LayerNorm.bias"),
    (r"^mlm\.transform\.(weight|bias)$", "cls.predictions.transform.dense.${1}"),
    (r"^mlm\.norm\.(weight|gamma)$", "cls.predictions.transform.LayerNorm.weight"),
    (r"^mlm\.norm\.(bias|beta)$", "cls.predictions.transform.LayerNorm.bias"),
    (r"^mlm\.bias$", "cls.predictions.bias"),
    (r"^nsp\.dense\.(weight|bias)$", "bert.pooler.dense.${1}"),
    (r"^nsp\.output\.(weight|bias)$", "cls.seq_relationship.${1}"),
    (r"^head\.dense\.(weight|bias)$", "bert.pooler.dense.${1}"),
    (r"^head\.output\.(weight|bias)$", "classifier.${1}"),
];

/// Writes the model directory `dir` as a HuggingFace checkpoint into the existing directory
/// `out`: `config.json`, `model.safetensors`, `tokenizer.json` (with BERT's post-processor),
/// `vocab.txt` and `tokenizer_config.json`. A pre-trained model becomes `BertForPreTraining` or
/// `BertForMaskedLM`; a classifier `BertForSequenceClassification` (`id2label`, `problem_type`),
/// which needs the pooled head on the `[CLS]` state — what BERT's pooler and classifier compute.
/// Returns the architecture written.
pub fn export(dir: &super::model_dir::ModelDir, out: &Path, device: &Device) -> Result<String> {
    use super::model_dir::ModelKind;
    use crate::config::{HeadKind, Pooling};
    let cfg = &dir.config;
    let m = &cfg.model;
    let name = dir.path.display();
    if m.backbone != BackboneKind::Transformer {
        bail!("{name}: a {} model; HuggingFace BERT holds Transformer encoders only", m.backbone);
    }
    if m.transformer.norm_first {
        bail!("{name}: a pre-LN Transformer (model.norm_first); BERT's layers are post-LN");
    }
    if m.type_vocab_size != 2 {
        bail!("{name}: no segment embeddings (model.type_vocab_size = {}); BERT has two", m.type_vocab_size);
    }
    let specials = dir.tokenizer.specials();
    let mut config = serde_json::json!({
        "model_type": "bert",
        "vocab_size": m.vocab_size,
        "hidden_size": m.d_model,
        "num_hidden_layers": m.transformer.n_layers,
        "num_attention_heads": m.transformer.n_heads,
        "intermediate_size": m.transformer.d_ff,
        "hidden_act": match m.transformer.activation { Activation::Gelu => "gelu", Activation::GeluTanh => "gelu_new" },
        "hidden_dropout_prob": m.dropout,
        "attention_probs_dropout_prob": m.dropout,
        "max_position_embeddings": m.positions(),
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": m.transformer.layer_norm_eps,
        "pad_token_id": specials.pad,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": true,
    });
    let weights = out.join(HF_WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&weights).with_to_adapter(burn::store::BurnToPyTorchAdapter).overwrite(true);
    for (from, to) in EXPORT_MAP {
        store = store.with_key_remapping(*from, *to);
    }
    let save_error = |e: burn::store::SafetensorsStoreError| anyhow::anyhow!("{}: cannot write: {e}", weights.display());
    let architecture = match dir.meta.kind {
        ModelKind::Pretrained => {
            // HuggingFace orders the next-sentence classes the other way round
            let mut model = swap_nsp_classes(super::weights::load_weights(PretrainModel::init_for(cfg, device), &dir.weights(), dir.meta.weights_bytes)?);
            // an ELECTRA generator and detection head have no place in a BERT checkpoint: the
            // encoder (the discriminator) is what fine-tuning starts from
            (model.generator, model.rtd) = (None, None);
            model.save_into(&mut store).map_err(save_error)?;
            match (cfg.pretrain.has_head(Objective::Mlm), cfg.pretrain.has_head(Objective::Nsp)) {
                (true, true) => "BertForPreTraining",
                (true, false) => "BertForMaskedLM",
                _ => "BertModel",
            }
        }
        ModelKind::Classifier => {
            if cfg.finetune.head != HeadKind::Pooled {
                bail!("{name}: a label-attention head (finetune.head); BertForSequenceClassification has the pooled head only");
            }
            if m.transformer.pooling != Pooling::Cls {
                bail!("{name}: pools by {:?} (model.pooling); BertForSequenceClassification pools the [CLS] state", m.transformer.pooling);
            }
            let labels = dir.labels.as_ref().expect("a classifier directory has labels");
            let model = crate::model::Classifier::init(m, labels.len(), device);
            let model = super::weights::load_weights(model, &dir.weights(), dir.meta.weights_bytes)?;
            model.save_into(&mut store).map_err(save_error)?;
            let id2label: serde_json::Map<String, Value> = (0..labels.len()).map(|i| (i.to_string(), Value::from(labels.name(i)))).collect();
            let label2id: serde_json::Map<String, Value> = (0..labels.len()).map(|i| (labels.name(i).to_owned(), Value::from(i))).collect();
            config["id2label"] = Value::Object(id2label);
            config["label2id"] = Value::Object(label2id);
            let multi = dir.meta.problem == Some(crate::data::classify::Problem::MultiLabel);
            config["problem_type"] = Value::from(if multi { "multi_label_classification" } else { "single_label_classification" });
            "BertForSequenceClassification"
        }
        kind => bail!("{name}: a {kind:?} model; export-hf writes pre-trained Transformers and their classifiers"),
    };
    config["architectures"] = serde_json::json!([architecture]);
    let write_json = |file: &str, v: &Value| super::atomic::write_atomic(&out.join(file), serde_json::to_string_pretty(v).expect("JSON value").as_bytes());
    write_json(HF_CONFIG_FILE, &config)?;
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": dir.tokenizer.lowercase(),
        "model_max_length": m.max_len,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    });
    write_json(HF_TOKENIZER_CONFIG_FILE, &tokenizer_config)?;
    super::atomic::write_via_tmp(&out.join(TOKENIZER_FILE), |tmp| dir.tokenizer.save_for_hf(tmp))?;
    super::atomic::write_atomic(&out.join(HF_VOCAB_FILE), (dir.tokenizer.vocab_list().join("\n") + "\n").as_bytes())?;
    Ok(architecture.to_owned())
}
