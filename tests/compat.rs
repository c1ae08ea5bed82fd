//! Models and configs saved by earlier builds keep loading and predicting the same: the
//! fixtures in `tests/fixtures/` were written by bertlu 0.1.0 (see its README there).

use bertlu::config::{BackboneKind, Config, Pooling};
use bertlu::infer::classifier::LoadedClassifier;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Today's predictions of a fixture model on the fixture texts, as `predict --probs --k 5` prints them.
fn predictions(model: &str) -> Vec<String> {
    let clf = LoadedClassifier::open(&fixture(model)).unwrap();
    let texts: Vec<String> = std::fs::read_to_string(fixture("v0.1-texts.txt")).unwrap().lines().map(str::to_owned).collect();
    let thresholds = clf.thresholds(None);
    clf.probabilities(&texts, 64).iter().map(|p| clf.prediction_line(p, &thresholds, Some(5), true)).collect()
}

fn expected(model: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(&format!("{model}.predictions"))).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn models_saved_by_v0_1_predict_as_they_did() {
    for model in ["v0.1-transformer", "v0.1-textcnn"] {
        let (now, then) = (predictions(model), expected(model));
        assert_eq!(now.len(), 25);
        assert!(now.iter().all(|l| l.starts_with("__label__")), "{model}: every text gets labels with --k 5");
        assert_eq!(now, then, "{model}");
    }
}

#[test]
fn configs_saved_by_v0_1_load_with_every_setting() {
    let t = Config::load(&fixture("v0.1-transformer/config.toml")).unwrap();
    assert_eq!(t.model.backbone, BackboneKind::Transformer);
    assert_eq!((t.model.d_model, t.model.max_len, t.model.vocab_size), (16, 32, 300));
    assert_eq!((t.model.transformer.n_heads, t.model.transformer.n_layers, t.model.transformer.d_ff), (2, 1, 32));
    assert_eq!(t.model.transformer.pooling, Pooling::Mean);
    assert_eq!((t.finetune.optim.epochs, t.finetune.optim.lr, t.pretrain.optim.lr), (2, 0.0005, 0.001));
    let c = Config::load(&fixture("v0.1-textcnn/config.toml")).unwrap();
    assert_eq!((c.model.backbone, c.model.textcnn.filters, c.model.textcnn.filter_widths.clone()), (BackboneKind::TextCnn, 8, vec![3, 4, 5]));
    // what today's build writes reads back the same, key for key
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("config.toml");
    std::fs::write(&again, t.to_toml()).unwrap();
    assert_eq!(Config::load(&again).unwrap(), t);
    let old: toml::Table = toml::from_str(&std::fs::read_to_string(fixture("v0.1-transformer/config.toml")).unwrap()).unwrap();
    let new: toml::Table = toml::from_str(&t.to_toml()).unwrap();
    assert_eq!(old, new, "the same keys and values as v0.1 wrote");
}

#[test]
fn an_unknown_key_in_a_saved_config_is_refused_by_name() {
    let text = std::fs::read_to_string(fixture("v0.1-transformer/config.toml")).unwrap().replace("n_layers = 1", "n_layers = 1\nn_layerz = 2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("config.toml") && e.contains("unknown key 'n_layerz' in [model]"), "{e}");
}

#[test]
fn bf16_prediction_moves_the_fixture_models_probabilities_by_rounding_only() {
    use bertlu::config::Precision;
    use bertlu::model::kernels::bf16;
    let texts: Vec<String> = std::fs::read_to_string(fixture("v0.1-texts.txt")).unwrap().lines().map(str::to_owned).collect();
    for model in ["v0.1-transformer", "v0.1-textcnn"] {
        let f32_probs = LoadedClassifier::open(&fixture(model)).unwrap().probabilities(&texts, 64);
        let clf = LoadedClassifier::open(&fixture(model)).unwrap().with_precision(Precision::Bf16);
        let bf16_probs = clf.probabilities(&texts, 64);
        let diff = f32_probs.iter().flatten().zip(bf16_probs.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        if bf16::supported() {
            assert!(diff > 0.0 && diff < 0.01, "{model}: bf16 vs f32 probabilities differ by {diff}");
        } else {
            assert_eq!(diff, 0.0, "{model}: without AVX-512 BF16, bf16 prediction is f32");
        }
        // the precision belongs to this classifier: a plain one opened after it predicts in f32
        assert_eq!(LoadedClassifier::open(&fixture(model)).unwrap().probabilities(&texts, 64), f32_probs);
    }
    let embed = |p: Precision| bertlu::infer::embed::Embedder::open(&fixture("v0.1-transformer")).unwrap().with_precision(p).embed(&texts, bertlu::infer::embed::EmbedPooling::Mean, true, 64);
    let diff = embed(Precision::F32).iter().flatten().zip(embed(Precision::Bf16).iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 0.02 && (diff > 0.0) == bf16::supported(), "embeddings: bf16 vs f32 differ by {diff}");
}
