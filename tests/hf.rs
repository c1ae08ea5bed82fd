//! HuggingFace BERT checkpoints: a tiny random BERT written by python `transformers`
//! (`bench/make_hf_fixture.py`, in `tests/fixtures/hf-tiny-bert/`) is imported and gives the
//! token ids, last hidden states and masked-LM logits `transformers` computed for it.

mod common;

use bertlu::config::Objective;
use bertlu::data::batch::TokenBatch;
use bertlu::data::classify::encode_texts;
use bertlu::store::hf::import;
use bertlu::text::tokenizer::SpecialIds;
use burn::prelude::*;
use common::{fails, ok, s};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny-bert")
}

struct Case {
    text: String,
    ids: Vec<u32>,
    hidden: Vec<Vec<f32>>,
    mlm_logits: Vec<Vec<f32>>,
}

fn cases() -> Vec<Case> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let floats = |m: &serde_json::Value| -> Vec<Vec<f32>> { m.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect() };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>().join("\t"),
            ids: c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
            hidden: floats(&c["hidden"]),
            mlm_logits: floats(&c["mlm_logits"]),
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn an_imported_bert_computes_what_transformers_computed() {
    let device = Device::flex();
    let imported = import(&fixture(), &device).unwrap();
    assert_eq!(imported.tokenizer.specials(), SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 });
    let m = &imported.config.model;
    assert_eq!((m.d_model, m.transformer.n_layers, m.transformer.n_heads, m.transformer.d_ff, m.max_len, m.vocab_size), (32, 2, 4, 64, 64, 144));
    assert!(imported.mlm_head, "BertForPreTraining has cls.predictions");
    // 5 embedding tensors + 16 a layer + 5 of the masked-LM head + pooler and next-sentence output
    assert_eq!(imported.loaded.len(), 5 + 2 * 16 + 5 + 4, "{:?}", imported.loaded);
    assert!(imported.unused.is_empty(), "{:?}", imported.unused);
    assert_eq!(imported.nsp_head, bertlu::store::hf::NspImport::Complete);

    // English, Chinese without spaces, a pair, and a text cut to the 64 positions
    let cases = cases();
    let texts: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
    let seqs = encode_texts(&texts, &imported.tokenizer, m.max_len);
    for (c, got) in cases.iter().zip(&seqs) {
        assert_eq!(got, &c.ids, "{}", c.text);
    }
    // all four in one padded batch: padding must not reach the real positions
    let refs: Vec<&[u32]> = seqs.iter().map(|q| q.as_slice()).collect();
    let out = imported.model.backbone.forward(&TokenBatch::new(&refs, imported.tokenizer.specials(), &device));
    let [b, l, d] = out.states.dims();
    let states: Vec<f32> = out.states.clone().into_data().convert::<f32>().try_into_vec().unwrap();
    let head = imported.model.mlm.as_ref().unwrap();
    let logits = head.forward(out.states.reshape([b * l, d]), imported.model.backbone.token_embedding());
    let vocab = logits.dims()[1];
    let logits: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
    let (mut worst_hidden, mut worst_logit) = (0.0f32, 0.0f32);
    for (i, c) in cases.iter().enumerate() {
        for (j, (row, logit_row)) in c.hidden.iter().zip(&c.mlm_logits).enumerate() {
            let at = i * l + j;
            worst_hidden = worst_hidden.max(max_diff(&states[at * d..(at + 1) * d], row));
            worst_logit = worst_logit.max(max_diff(&logits[at * vocab..(at + 1) * vocab], logit_row));
        }
    }
    eprintln!("max abs difference from transformers: hidden {worst_hidden:e}, masked-LM logits {worst_logit:e}");
    assert!(worst_hidden <= 1e-4, "last hidden state differs from transformers' by {worst_hidden}");
    assert!(worst_logit <= 1e-4, "masked-LM logits differ from transformers' by {worst_logit}");
}

#[test]
fn import_hf_writes_a_pretrained_model_and_refuses_what_it_cannot_read() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let out = ok(&["import-hf", s(&fixture()), "--out", s(&p("tiny"))]);
    assert!(out.contains("loaded 46 tensors") && out.contains("pooler and next-sentence head from the checkpoint"), "{out}");
    let dir = bertlu::store::model_dir::ModelDir::open(&p("tiny")).unwrap();
    assert_eq!(dir.tokenizer.specials().cls, 101);
    // vocab.txt alone reads as tokenizer.json does
    let copy = |name: &str, skip: &[&str]| {
        std::fs::create_dir_all(p(name)).unwrap();
        for e in std::fs::read_dir(fixture()).unwrap() {
            let e = e.unwrap();
            if !skip.contains(&e.file_name().to_str().unwrap()) {
                std::fs::copy(e.path(), p(name).join(e.file_name())).unwrap();
            }
        }
        p(name)
    };
    let vocab_only = copy("vocab-only", &["tokenizer.json"]);
    let device = Device::flex();
    let a = import(&fixture(), &device).unwrap();
    let b = import(&vocab_only, &device).unwrap();
    let texts: Vec<String> = cases().into_iter().map(|c| c.text).collect();
    assert_eq!(encode_texts(&texts, &a.tokenizer, 64), encode_texts(&texts, &b.tokenizer, 64));
    // one-line errors naming the file and field, nothing written
    let broken = copy("broken", &[]);
    let config = std::fs::read_to_string(broken.join("config.json")).unwrap();
    for (field, from, to) in [("model_type", "\"bert\"", "\"roberta\""), ("hidden_act", "\"gelu\"", "\"relu\""), ("layer_norm_eps", "1e-12", "-1"), ("type_vocab_size", "\"type_vocab_size\": 2", "\"type_vocab_size\": 3")] {
        std::fs::write(broken.join("config.json"), config.replace(from, to)).unwrap();
        let e = fails(&["import-hf", s(&broken), "--out", s(&p("x"))]);
        assert!(e.contains("config.json") && e.contains(&format!("`{field}`")), "{e}");
    }
    std::fs::write(broken.join("config.json"), &config).unwrap();
    let weights = std::fs::read(broken.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let e = fails(&["import-hf", s(&broken), "--out", s(&p("x"))]);
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::rename(broken.join("model.safetensors"), broken.join("pytorch_model.bin")).unwrap();
    let e = fails(&["import-hf", s(&broken), "--out", s(&p("x"))]);
    assert!(e.contains("pytorch_model.bin") && e.contains("safe_serialization"), "{e}");
    let e = fails(&["import-hf", s(&p("nowhere")), "--out", s(&p("x"))]);
    assert!(e.contains("nowhere"), "{e}");
    assert!(!p("x").exists() && !p(".x.partial").exists());
}

#[test]
fn embed_gives_sentence_transformers_vectors_mean_pooled_and_unit_length() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny");
    ok(&["import-hf", s(&fixture()), "--out", s(&model)]);
    let cases = cases();
    let texts: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
    let embedder = bertlu::infer::embed::Embedder::open(&model).unwrap();
    let got = embedder.embed(&texts, bertlu::infer::embed::EmbedPooling::Mean, true, 2);
    for (c, v) in cases.iter().zip(&got) {
        // sentence-transformers: the mean of the last hidden states over the real positions, unit length
        let n = c.hidden.len() as f32;
        let mean: Vec<f32> = (0..32).map(|k| c.hidden.iter().map(|row| row[k]).sum::<f32>() / n).collect();
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        let want: Vec<f32> = mean.iter().map(|x| x / norm).collect();
        assert!(max_diff(v, &want) <= 1e-5, "{}: {}", c.text, max_diff(v, &want));
    }
    // the command writes one JSON array a line, in input order
    let texts_file = d.path().join("texts.txt");
    std::fs::write(&texts_file, texts.join("\n") + "\n").unwrap();
    let out = d.path().join("vectors.jsonl");
    ok(&["embed", "--model", s(&model), "--data", s(&texts_file), "--out", s(&out), "--normalize"]);
    let lines: Vec<Vec<f32>> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (a, b) in lines.iter().zip(&got) {
        assert!(max_diff(a, b) <= 1e-6);
    }
    // with a .npy name: NumPy's format, float32 [4, 32], the same values
    let npy = d.path().join("vectors.npy");
    ok(&["embed", "--model", s(&model), "--data", s(&texts_file), "--out", s(&npy), "--normalize"]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (4, 32)") && (10 + header_len) % 64 == 0, "{header}");
    let values: Vec<f32> = bytes[10 + header_len..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values, lines.concat());
}

#[test]
fn export_hf_writes_what_import_hf_reads_back_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    ok(&["import-hf", s(&fixture()), "--out", s(&p("tiny"))]);
    let out = ok(&["export-hf", s(&p("tiny")), "--out", s(&p("hf"))]);
    assert!(out.contains("BertForPreTraining"), "{out}");
    let device = Device::flex();
    let (a, b) = (import(&fixture(), &device).unwrap(), import(&p("hf"), &device).unwrap());
    assert_eq!(a.loaded, b.loaded);
    assert!(b.unused.is_empty(), "{:?}", b.unused);
    struct Flatten(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.push(param.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
        }
    }
    let flat = |m: &bertlu::model::PretrainModel| -> Vec<Vec<f32>> {
        let mut f = Flatten(Vec::new());
        m.visit(&mut f);
        f.0
    };
    assert_eq!(flat(&a.model), flat(&b.model), "every tensor survives export → import exactly");
    let texts: Vec<String> = cases().into_iter().map(|c| c.text).collect();
    assert_eq!(encode_texts(&texts, &a.tokenizer, 64), encode_texts(&texts, &b.tokenizer, 64));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("hf").join("config.json")).unwrap()).unwrap();
    assert_eq!((config["model_type"].as_str(), config["hidden_size"].as_u64(), config["max_position_embeddings"].as_u64()), (Some("bert"), Some(32), Some(64)));
    // a classifier pooled from [CLS] is BertForSequenceClassification; a TextCNN is refused
    common::write(d.path(), "train.txt", common::labelled_lines(60, 2).as_bytes());
    ok(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("clf")), "--epochs", "1", "-q"]);
    let out = ok(&["export-hf", s(&p("clf")), "--out", s(&p("hf-clf"))]);
    assert!(out.contains("BertForSequenceClassification"), "{out}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("hf-clf").join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 4);
    ok(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("clf-mean")), "--epochs", "1", "--pooling", "mean", "-q"]);
    let e = fails(&["export-hf", s(&p("clf-mean")), "--out", s(&p("x"))]);
    assert!(e.contains("[CLS]") && e.contains("model.pooling"), "{e}");
    ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("cnn")), "--preset", "tiny", "--backbone", "textcnn", "--vocab-size", "60", "--epochs", "1", "-q"]);
    let e = fails(&["export-hf", s(&p("cnn")), "--out", s(&p("x"))]);
    assert!(e.contains("textcnn") && e.contains("Transformer"), "{e}");
    assert!(!p("x").exists() && !p(".x.partial").exists());
}

/// The second fixture: `gelu_new` (tanh) activation, LayerNorm epsilon 1e-5, and what
/// transformers' pooler and next-sentence head compute.
#[test]
fn tanh_gelu_other_epsilon_pooler_and_next_sentence_logits_match_transformers() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny-bert-tanh");
    let device = Device::flex();
    let imported = import(&fixture, &device).unwrap();
    let t = &imported.config.model.transformer;
    assert_eq!((t.activation, t.layer_norm_eps), (bertlu::config::Activation::GeluTanh, 1e-5));
    // BERT drops nothing after the feed-forward activation, and the imported config says so
    assert_eq!((t.activation_dropout, imported.config.model.activation_dropout(), imported.config.model.dropout), (Some(0.0), 0.0, 0.1));
    assert!(imported.config.to_toml().contains("activation_dropout = 0.0"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap()).unwrap();
    let floats = |x: &serde_json::Value| -> Vec<f32> { x.as_array().unwrap().iter().map(|y| y.as_f64().unwrap() as f32).collect() };
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tanh");
    ok(&["import-hf", s(&fixture), "--out", s(&model)]);
    let embedder = bertlu::infer::embed::Embedder::open(&model).unwrap();
    assert!(embedder.has_pooler());
    let (mut worst_hidden, mut worst_pooled, mut worst_nsp) = (0.0f32, 0.0f32, 0.0f32);
    for c in v["cases"].as_array().unwrap() {
        let text = c["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>().join("\t");
        let seq = encode_texts(&[text.clone()], &imported.tokenizer, 64).remove(0);
        let tokens = TokenBatch::new(&[seq.as_slice()], imported.tokenizer.specials(), &device);
        let out = imported.model.backbone.forward(&tokens);
        let states: Vec<f32> = out.states.clone().into_data().convert::<f32>().try_into_vec().unwrap();
        for (j, row) in c["hidden"].as_array().unwrap().iter().enumerate() {
            let want = floats(row);
            worst_hidden = worst_hidden.max(max_diff(&states[j * want.len()..(j + 1) * want.len()], &want));
        }
        let pooled = embedder.embed(&[text], bertlu::infer::embed::EmbedPooling::Pooler, false, 1).remove(0);
        worst_pooled = worst_pooled.max(max_diff(&pooled, &floats(&c["pooled"])));
        // bertlu's class 1 is HuggingFace's class 0 ("B follows A")
        let logits: Vec<f32> = imported.model.nsp.as_ref().unwrap().forward(out.pooled).into_data().convert::<f32>().try_into_vec().unwrap();
        let hf = floats(&c["nsp_logits"]);
        worst_nsp = worst_nsp.max(max_diff(&[logits[1], logits[0]], &hf));
    }
    eprintln!("tanh fixture, max abs difference from transformers: hidden {worst_hidden:e}, pooler {worst_pooled:e}, next-sentence logits {worst_nsp:e}");
    assert!(worst_hidden <= 1e-4 && worst_pooled <= 1e-4 && worst_nsp <= 1e-4, "{worst_hidden} {worst_pooled} {worst_nsp}");
    // exported and read back: the same activation, epsilon and next-sentence order
    ok(&["export-hf", s(&model), "--out", s(&d.path().join("hf"))]);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("hf/config.json")).unwrap()).unwrap();
    assert_eq!((config["hidden_act"].as_str(), config["layer_norm_eps"].as_f64()), (Some("gelu_new"), Some(1e-5)));
    let again = import(&d.path().join("hf"), &device).unwrap();
    let w = |m: &bertlu::model::PretrainModel| m.nsp.as_ref().unwrap().output.weight.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    assert_eq!(w(&again.model), w(&imported.model));
}

#[test]
fn a_shorter_max_len_keeps_the_position_table() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    ok(&["import-hf", s(&fixture()), "--out", s(&p("tiny"))]);
    common::write(d.path(), "train.txt", common::labelled_lines(40, 2).as_bytes());
    ok(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("clf")), "--epochs", "1", "--set", "model.max_len=16", "-q"]);
    let cfg = bertlu::config::Config::load(&p("clf").join("config.toml")).unwrap();
    assert_eq!((cfg.model.max_len, cfg.model.max_positions, cfg.model.positions()), (16, 64, 64));
    assert_eq!(cfg.model.transformer.activation_dropout, Some(0.0), "BERT's: nothing dropped after the activation");
    // the dropout rates shape no weight: they may change with --init, within [0, 1)
    let e = fails(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("ad")), "--set", "model.activation_dropout=1.5"]);
    assert!(e.contains("model.activation_dropout must be in [0, 1)"), "{e}");
    ok(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("ad")), "--epochs", "1", "--set", "model.activation_dropout=0.2", "-q"]);
    assert_eq!(bertlu::config::Config::load(&p("ad").join("config.toml")).unwrap().model.activation_dropout(), 0.2);
    // its texts are cut at 16 pieces; the table still has BERT's 64 rows, and it exports as such
    let out = ok(&["export-hf", s(&p("clf")), "--out", s(&p("hf"))]);
    assert!(out.contains("BertForSequenceClassification"), "{out}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("hf").join("config.json")).unwrap()).unwrap();
    assert_eq!(config["max_position_embeddings"], 64);
    let e = fails(&["finetune", "--init", s(&p("tiny")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("x")), "--set", "model.max_len=65"]);
    assert!(e.contains("max_len") && e.contains("64"), "{e}");
}

/// Continued pre-training with `--tasks mlm` of an imported BERT keeps its next-sentence head
/// (BERT's pooler) as it is, for fine-tuning, `embed --pooling pooler` and `export-hf`.
#[test]
fn continued_masked_lm_pre_training_keeps_the_pooler() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    ok(&["import-hf", s(&fixture()), "--out", s(&p("tiny"))]);
    common::write(d.path(), "corpus.txt", common::corpus_lines(40, 3).as_bytes());
    let log = ok(&["pretrain", "--init", s(&p("tiny")), "--corpus", s(&p("corpus.txt")), "--out", s(&p("more")), "--tasks", "mlm", "--max-steps", "3", "--seed", "1"]);
    assert!(log.contains("nsp head kept as it is"), "{log}");
    let device = Device::flex();
    let open = |dir: &Path| {
        let dir = bertlu::store::model_dir::ModelDir::open(dir).unwrap();
        let model = bertlu::model::PretrainModel::init_for(&dir.config, &device);
        (bertlu::store::weights::load_weights(model, &dir.weights(), dir.meta.weights_bytes).unwrap(), dir.config)
    };
    let ((before, _), (after, config)) = (open(&p("tiny")), open(&p("more")));
    assert_eq!((config.pretrain.tasks.clone(), config.pretrain.kept_heads.clone()), (vec![Objective::Mlm], vec![Objective::Nsp]));
    let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let nsp = |m: &bertlu::model::PretrainModel| m.nsp.as_ref().map(|h| (values(h.dense.weight.val()), values(h.output.weight.val())));
    assert_eq!(nsp(&after), nsp(&before), "the kept head is bit for bit the imported one");
    assert_ne!(values(after.backbone.token_embedding()), values(before.backbone.token_embedding()), "the encoder trained");
    assert!(bertlu::infer::embed::Embedder::open(&p("more")).unwrap().has_pooler());
    let out = ok(&["export-hf", s(&p("more")), "--out", s(&p("hf"))]);
    assert!(out.contains("BertForPreTraining"), "{out}");
    // fine-tuning starts its head's dense layer from the pooler
    common::write(d.path(), "train.txt", common::labelled_lines(40, 2).as_bytes());
    ok(&["finetune", "--init", s(&p("more")), "--train", s(&p("train.txt")), "--valid", s(&p("train.txt")), "--out", s(&p("clf")), "--epochs", "1", "-q"]);
    let meta = std::fs::read_to_string(p("clf").join("model.json")).unwrap();
    assert!(meta.contains("(from nsp.dense)"), "{meta}");
    // training next-sentence prediction again takes the head back: nothing is kept
    ok(&["pretrain", "--init", s(&p("more")), "--corpus", s(&p("corpus.txt")), "--out", s(&p("again")), "--tasks", "mlm,nsp", "--max-steps", "2", "-q"]);
    let (_, config) = open(&p("again"));
    assert!(config.pretrain.kept_heads.is_empty() && config.pretrain.has(Objective::Nsp));
}

/// Twelve AdamW steps of masked-LM training of the imported checkpoint give, step by step, the
/// losses python `transformers` + PyTorch computed on the same batches (single texts and pairs,
/// padded), and after them the same logits on a probe batch (`bench/make_training_fixture.py`):
/// gradients, per-tensor clipping, weight decay and the optimiser checked against the reference.
#[test]
fn masked_lm_training_steps_match_transformers() {
    use bertlu::data::batch::PretrainBatch;
    use bertlu::data::mlm::MlmExample;
    use burn::optim::GradientsParams;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("training.json")).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> { x.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect() };
    let floats = |x: &serde_json::Value| -> Vec<f64> { x.as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect() };
    let examples = |b: &serde_json::Value| -> Vec<MlmExample> {
        b.as_array().unwrap().iter().map(|e| MlmExample { input_ids: ids(&e["input_ids"]), positions: ids(&e["positions"]).into_iter().map(|p| p as usize).collect(), targets: ids(&e["targets"]) }).collect()
    };
    let d = tempfile::tempdir().unwrap();
    ok(&["import-hf", s(&fixture()), "--out", s(&d.path().join("tiny"))]);
    let dir = bertlu::store::model_dir::ModelDir::open(&d.path().join("tiny")).unwrap();
    // without dropout both sides compute one function
    let mut config = dir.config.clone();
    config.model.dropout = 0.0;
    let device = Device::flex().autodiff();
    let mut model = bertlu::store::weights::load_weights(bertlu::model::PretrainModel::init_for(&config, &device), &dir.weights(), dir.meta.weights_bytes).unwrap();
    let specials = dir.tokenizer.specials();
    let mut optim = bertlu::train::optim::adamw(0.01, 1.0);
    let (expected, lrs) = (floats(&v["losses"]), floats(&v["lrs"]));
    let mut worst_loss = 0.0f64;
    for (step, batch) in v["batches"].as_array().unwrap().iter().enumerate() {
        let out = model.forward(&PretrainBatch::new(&examples(batch), specials, &device));
        let loss = out.loss();
        let value = loss.clone().into_scalar::<f32>() as f64;
        worst_loss = worst_loss.max((value - expected[step]).abs());
        assert!((value - expected[step]).abs() < 1e-4, "step {step}: loss {value} against transformers' {}", expected[step]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lrs[step], model, grads);
    }
    // the trained weights: logits at the probe batch's masked positions
    let (plain, cpu) = (model.valid(), Device::flex());
    let probe = examples(&v["probe"]);
    let batch = PretrainBatch::new(&probe, specials, &cpu);
    let out = plain.backbone.forward(&batch.tokens);
    let [b, l, dm] = out.states.dims();
    let logits = plain.mlm.as_ref().unwrap().forward(out.states.reshape([b * l, dm]), plain.backbone.token_embedding());
    let vocab = logits.dims()[1];
    let logits: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
    let rows: Vec<usize> = probe.iter().enumerate().flat_map(|(i, e)| e.positions.iter().map(move |&p| i * l + p)).collect();
    let want: Vec<Vec<f32>> = v["probe_logits"].as_array().unwrap().iter().map(|r| floats(r).into_iter().map(|x| x as f32).collect()).collect();
    assert_eq!(rows.len(), want.len());
    let worst_logit = rows.iter().zip(&want).map(|(&r, w)| max_diff(&logits[r * vocab..(r + 1) * vocab], w)).fold(0.0, f32::max);
    eprintln!("max abs difference from transformers: losses {worst_loss:e}, trained masked-LM logits {worst_logit:e}");
    assert!(worst_logit <= 1e-4, "after training, masked-LM logits differ from transformers' by {worst_logit}");
}
