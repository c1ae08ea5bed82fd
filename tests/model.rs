//! Model-level behaviour: learning, saving and loading, carrying pre-trained weights over.

mod common;

use bertlu::data::batch::{PretrainBatch, TokenBatch};
use bertlu::store::weights::load_prefix;
use bertlu::store::model_dir::{ModelDir, ModelKind, ModelMeta};
use bertlu::config::{BackboneKind, Config, Objective, Preset};
use bertlu::infer::classifier::{probabilities, LoadedClassifier};
use bertlu::model::{Classifier, PretrainModel};
use bertlu::data::classify::{LabelSet, Problem};
use bertlu::data::mlm::Masking;
use bertlu::text::tokenizer::{SpecialIds, VocabOptions, WordPieceTokenizer};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn tiny_config(tok: &WordPieceTokenizer) -> Config {
    let mut cfg = Config::preset(Preset::Tiny).merged(common::TINY_TOML).unwrap();
    cfg.model.vocab_size = tok.vocab_size();
    cfg
}

fn tokenizer() -> WordPieceTokenizer {
    let docs: Vec<String> = common::corpus_lines(300, 1).lines().map(|s| s.to_owned()).collect();
    WordPieceTokenizer::train(docs.into_iter(), &VocabOptions { size: 120, lowercase: true, min_frequency: 1 }).unwrap()
}

fn seqs(tok: &WordPieceTokenizer, n: usize) -> Vec<Vec<u32>> {
    common::corpus_lines(n, 9).lines().map(|l| bertlu::data::classify::wrap(&tok.encode(l), 32, SpecialIds::BERTLU)).collect()
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn masked_lm_loss_falls_with_training() {
    let tok = tokenizer();
    let cfg = tiny_config(&tok);
    learns_one_batch(&cfg, &tok);
    let mut pre_ln = cfg.clone();
    pre_ln.model.transformer.norm_first = true;
    learns_one_batch(&pre_ln, &tok);
    // the same masked-LM code path drives the TextCNN
    learns_one_batch(&cfg.clone().with_backbone(BackboneKind::TextCnn), &tok);
}

fn learns_one_batch(cfg: &Config, tok: &WordPieceTokenizer) {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = PretrainModel::init(&cfg.model, &[Objective::Mlm], &device);
    let masking = Masking { prob: 0.15, max_predictions: 5, vocab_size: cfg.model.vocab_size as u32, specials: SpecialIds::BERTLU, whole_words: None, split: bertlu::data::mlm::MaskSplit::BERT };
    let mut rng = StdRng::seed_from_u64(5);
    let examples: Vec<_> = seqs(tok, 16).iter().map(|s| masking.apply(s, &mut rng)).collect();
    let batch = PretrainBatch::new(&examples, SpecialIds::BERTLU, &device);
    let mut optim = bertlu::train::optim::adamw(0.0, 1.0);
    let first: f32 = model.forward(&batch).loss().into_scalar();
    for _ in 0..60 {
        let out = model.forward(&batch);
        let grads = GradientsParams::from_grads(out.loss().backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let out = model.forward(&batch).mlm.expect("an mlm output");
    let last: f32 = out.loss.into_scalar();
    // ln(120) ≈ 4.8 at the start; a model that fits one batch drives it far down.
    assert!(first > 4.0, "initial loss {first}");
    assert!(last < first * 0.3, "loss {first} -> {last}");
    assert!(out.correct.into_scalar::<i64>() as usize * 2 > out.count, "most masked tokens recovered");
}

#[test]
fn save_load_gives_identical_predictions() {
    let tok = tokenizer();
    let labels = LabelSet::from_names(vec!["a".into(), "b".into(), "c".into()]);
    let input = seqs(&tok, 20);
    for backbone in [BackboneKind::Transformer, BackboneKind::TextCnn] {
        let cfg = tiny_config(&tok).with_backbone(backbone);
        let device = Device::flex();
        device.seed(11);
        let model = Classifier::init(&cfg.model, labels.len(), &device);
        // prediction's path: a TextCNN folded into its embedding table (built within these 20
        // texts, which hold more positions than the vocabulary has pieces)
        let folded = model.folded();
        assert_eq!(folded.is_some(), backbone == BackboneKind::TextCnn);
        let dir = tempfile::tempdir().unwrap();
        let meta = ModelMeta::new(ModelKind::Classifier, Some(Problem::MultiLabel), 0.5, serde_json::Value::Null);
        ModelDir::write(dir.path(), &cfg, &tok, &model, meta, Some(&labels)).unwrap();
        let before = probabilities(&model, folded.as_ref(), &input, SpecialIds::BERTLU, Problem::MultiLabel, 7, &device);
        let loaded = LoadedClassifier::open(dir.path()).unwrap();
        assert_eq!(loaded.labels, labels);
        let bertlu::infer::classifier::MemberModel::Neural { model: reloaded, folded: refolded, .. } = &loaded.members[0].model else { panic!("a fine-tuned model loads as a neural member") };
        assert_eq!(refolded.is_some(), folded.is_some());
        let after = probabilities(reloaded, refolded.as_ref(), &input, SpecialIds::BERTLU, Problem::MultiLabel, 7, &loaded.device);
        assert_eq!(before, after, "{backbone:?}");
        assert_eq!((folded.map_or(0, |f| f.tables_built()), refolded.as_ref().map_or(0, |f| f.tables_built())), if backbone == BackboneKind::TextCnn { (1, 1) } else { (0, 0) });
        // a fresh model with another seed predicts differently, so the equality above means something
        device.seed(12);
        let other = Classifier::init(&cfg.model, labels.len(), &device);
        assert_ne!(before, probabilities(&other, other.folded().as_ref(), &input, SpecialIds::BERTLU, Problem::MultiLabel, 7, &device));
    }
}

#[test]
fn init_loads_every_backbone_weight() {
    let tok = tokenizer();
    for kind in [BackboneKind::Transformer, BackboneKind::TextCnn] {
        init_loads_every_weight_of(tiny_config(&tok).with_backbone(kind), &tok);
    }
}

fn init_loads_every_weight_of(cfg: Config, tok: &WordPieceTokenizer) {
    let tok = tok.clone();
    let device = Device::flex();
    device.seed(21);
    let pre = PretrainModel::init(&cfg.model, &[Objective::Mlm], &device);
    let dir = tempfile::tempdir().unwrap();
    let meta = ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::Value::Null);
    ModelDir::write(dir.path(), &cfg, &tok, &pre, meta, None).unwrap();
    let saved = ModelDir::open(dir.path()).unwrap();

    device.seed(22);
    let fresh = Classifier::init(&cfg.model, 4, &device);
    let (loaded, names) = load_prefix(fresh.clone(), &saved.weights(), saved.meta.weights_bytes, "backbone.").unwrap();
    assert!(names.iter().any(|n| n.contains("token_embedding")));
    assert_eq!(names.iter().any(|n| n.contains("position_embedding")), cfg.model.backbone == BackboneKind::Transformer);
    if cfg.model.backbone == BackboneKind::TextCnn {
        // token and segment embeddings + (weight, bias) of each convolution
        assert_eq!(names.len(), 2 + 2 * cfg.model.textcnn.filter_widths.len(), "{names:?}");
    }
    assert!(names.iter().any(|n| n.contains("segment_embedding")), "segment embeddings carry over: {names:?}");
    assert!(names.iter().all(|n| n.starts_with("backbone.")));
    // every backbone tensor of the pre-trained model, and nothing else
    use burn::store::ModuleSnapshot;
    let mut want: Vec<String> = pre.collect(None, None, false).into_iter().map(|t| t.name.clone()).filter(|n| n.starts_with("backbone.")).collect();
    want.sort();
    assert_eq!(names, want);

    let mut batch_seqs = seqs(&tok, 8);
    // a pair, so the segment embeddings take part
    batch_seqs.push(bertlu::data::nsp::wrap_pair(&tok.encode("alpha beta"), &tok.encode("gamma"), 32, SpecialIds::BERTLU));
    let refs: Vec<&[u32]> = batch_seqs.iter().map(|s| s.as_slice()).collect();
    let batch = TokenBatch::new(&refs, SpecialIds::BERTLU, &device);
    let want = pre.backbone.forward(&batch).states;
    assert_eq!(max_abs_diff(loaded.backbone.forward(&batch).states, want.clone()), 0.0);
    assert!(max_abs_diff(fresh.backbone.forward(&batch).states, want) > 1e-3);
    // the head stays as initialised
    assert_eq!(loaded.head.output.weight.val().into_data(), fresh.head.output.weight.val().into_data());
}

#[test]
fn init_refuses_a_checkpoint_of_another_shape() {
    let tok = tokenizer();
    let cfg = tiny_config(&tok);
    let device = Device::flex();
    let pre = PretrainModel::init(&cfg.model, &[Objective::Mlm], &device);
    let dir = tempfile::tempdir().unwrap();
    ModelDir::write(dir.path(), &cfg, &tok, &pre, ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::Value::Null), None).unwrap();
    let saved = ModelDir::open(dir.path()).unwrap();
    let mut other = cfg.model.clone();
    other.transformer.d_ff = 48;
    let err = load_prefix(Classifier::init(&other, 2, &device), &saved.weights(), saved.meta.weights_bytes, "backbone.").unwrap_err();
    assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
    // a Transformer checkpoint has none of a TextCNN's tensors: refused, not half-loaded
    let cnn = cfg.clone().with_backbone(BackboneKind::TextCnn).model;
    let err = load_prefix(Classifier::init(&cnn, 2, &device), &saved.weights(), saved.meta.weights_bytes, "backbone.").unwrap_err();
    assert!(format!("{err:#}").contains("TextCnn"), "{err:#}");
}

#[test]
fn output_bias_starts_at_the_label_prior() {
    let tok = tokenizer();
    let cfg = tiny_config(&tok);
    let device = Device::flex();
    let m = Classifier::init(&cfg.model, 2, &device).with_prior_bias(&[0.1, 0.5], Problem::MultiLabel);
    let b: Vec<f32> = m.head.output.bias.as_ref().unwrap().val().into_data().try_into_vec().unwrap();
    assert!((b[0] - (0.1f32 / 0.9).ln()).abs() < 1e-6 && b[1].abs() < 1e-6, "{b:?}");
    let m = Classifier::init(&cfg.model, 2, &device).with_prior_bias(&[0.25, 0.75], Problem::SingleLabel);
    let b: Vec<f32> = m.head.output.bias.as_ref().unwrap().val().into_data().try_into_vec().unwrap();
    assert!((b[0] - 0.25f32.ln()).abs() < 1e-6 && (b[1] - 0.75f32.ln()).abs() < 1e-6, "{b:?}");
}

#[test]
fn word_vectors_initialise_exactly_their_embedding_rows() {
    let tok = tokenizer();
    let d = Device::flex();
    for backbone in [BackboneKind::Transformer, BackboneKind::TextCnn] {
        let mut cfg = tiny_config(&tok);
        cfg.model.backbone = backbone;
        let dim = cfg.model.d_model;
        let before = Classifier::init(&cfg.model, 3, &d);
        let old: Vec<f32> = before.backbone.token_embedding().into_data().try_into_vec().unwrap();
        let rows = vec![(7u32, vec![0.5f32; dim]), (11u32, (0..dim).map(|i| i as f32).collect())];
        let after = before.backbone.with_token_rows(&rows);
        let new: Vec<f32> = after.token_embedding().into_data().try_into_vec().unwrap();
        for id in 0..tok.vocab_size() {
            let (a, b) = (&old[id * dim..(id + 1) * dim], &new[id * dim..(id + 1) * dim]);
            match rows.iter().find(|r| r.0 as usize == id) {
                Some((_, v)) => assert_eq!(b, v.as_slice(), "{backbone:?} row {id}"),
                None => assert_eq!(a, b, "{backbone:?} row {id} must stay as initialised"),
            }
        }
    }
}

#[test]
fn next_sentence_head_learns_pairs_beside_the_masked_lm() {
    // pairs of the topic corpus: a true next sentence shares its document's topic
    let docs: Vec<String> = common::topic_documents(200, 11).lines().map(str::to_owned).collect();
    let tok = WordPieceTokenizer::train(docs.clone().into_iter(), &VocabOptions { size: 120, lowercase: true, min_frequency: 1 }).unwrap();
    let cfg = tiny_config(&tok);
    let sentences: Vec<Vec<Vec<u32>>> = docs.iter().map(|d| bertlu::data::nsp::split_sentences(d).into_iter().map(|s| tok.encode(s)).collect()).collect();
    let mut rng = StdRng::seed_from_u64(2);
    let all: Vec<usize> = (0..sentences.len()).collect();
    let pairs = bertlu::data::nsp::build_pairs(&sentences, &all, bertlu::data::nsp::PairSettings { max_len: 32, short_seq_prob: 0.0, specials: SpecialIds::BERTLU }, &mut rng);
    let pairs = &pairs[..32];
    let masking = Masking { prob: 0.15, max_predictions: 5, vocab_size: cfg.model.vocab_size as u32, specials: SpecialIds::BERTLU, whole_words: None, split: bertlu::data::mlm::MaskSplit::BERT };
    let examples: Vec<_> = pairs.iter().map(|p| masking.apply(&p.ids, &mut rng)).collect();
    let labels: Vec<bool> = pairs.iter().map(|p| p.is_next.unwrap()).collect();
    assert!(labels.iter().any(|&x| x) && labels.iter().any(|&x| !x));
    let device = Device::flex().autodiff();
    device.seed(4);
    let batch = PretrainBatch::new(&examples, SpecialIds::BERTLU, &device).with_is_next(&labels);
    assert!(batch.tokens.segments.is_some(), "pairs carry segment ids");
    let mut model = PretrainModel::init(&cfg.model, &[Objective::Mlm, Objective::Nsp], &device);
    let mut optim = bertlu::train::optim::adamw(0.0, 1.0);
    let out = model.forward(&batch);
    let (mlm0, nsp0): (f32, f32) = (out.mlm.unwrap().loss.into_scalar(), out.nsp.unwrap().loss.into_scalar());
    for _ in 0..60 {
        let out = model.forward(&batch);
        let grads = GradientsParams::from_grads(out.loss().backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let out = model.forward(&batch);
    let nsp = out.nsp.expect("an nsp output");
    let nsp1: f32 = nsp.loss.into_scalar();
    let mlm1: f32 = out.mlm.expect("an mlm output").loss.into_scalar();
    assert!((nsp0 - 2f32.ln()).abs() < 0.2, "NSP starts near chance: {nsp0}");
    assert!(nsp1 < nsp0 * 0.3, "NSP loss {nsp0} -> {nsp1}");
    assert!(nsp.correct.into_scalar::<i64>() as usize >= 30, "pairs told apart");
    assert!(mlm1 < mlm0 * 0.5, "the masked LM learns beside it: {mlm0} -> {mlm1}");
    // without the nsp objective there is no nsp head and no nsp output
    let mlm_only = PretrainModel::init(&cfg.model, &[Objective::Mlm], &device);
    assert!(mlm_only.nsp.is_none() && mlm_only.forward(&batch).nsp.is_none());
}

#[test]
fn next_sentence_pooler_carries_into_the_classification_head() {
    let tok = tokenizer();
    let cfg = tiny_config(&tok);
    let device = Device::flex();
    device.seed(31);
    let pre = PretrainModel::init(&cfg.model, &[Objective::Mlm, Objective::Nsp], &device);
    let dir = tempfile::tempdir().unwrap();
    ModelDir::write(dir.path(), &cfg, &tok, &pre, ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::Value::Null), None).unwrap();
    let saved = ModelDir::open(dir.path()).unwrap();
    let fresh = Classifier::init(&cfg.model, 3, &device);
    let (loaded, names) = bertlu::store::weights::load_mapped(fresh.clone(), &saved.weights(), saved.meta.weights_bytes, "nsp.dense.", "head.dense.").unwrap();
    assert_eq!(names, ["head.dense.bias", "head.dense.weight"]);
    let nsp = pre.nsp.as_ref().unwrap();
    assert_eq!(loaded.head.dense.weight.val().into_data(), nsp.dense.weight.val().into_data());
    assert_ne!(fresh.head.dense.weight.val().into_data(), nsp.dense.weight.val().into_data());
    assert_eq!(loaded.head.output.weight.val().into_data(), fresh.head.output.weight.val().into_data(), "the output layer stays as initialised");
    // a masked-LM-only checkpoint has no pooler to give: refused, not skipped
    let mlm_only = PretrainModel::init(&cfg.model, &[Objective::Mlm], &device);
    let dir2 = tempfile::tempdir().unwrap();
    ModelDir::write(dir2.path(), &cfg, &tok, &mlm_only, ModelMeta::new(ModelKind::Pretrained, None, 0.0, serde_json::Value::Null), None).unwrap();
    let saved2 = ModelDir::open(dir2.path()).unwrap();
    let e = bertlu::store::weights::load_mapped(fresh, &saved2.weights(), saved2.meta.weights_bytes, "nsp.dense.", "head.dense.").unwrap_err();
    assert!(e.to_string().contains("lack 2 of the 2"), "{e}");
}
