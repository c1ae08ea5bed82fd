//! Using saved classifiers: probabilities in batches, decisions, scores and ensembles
//! (`classifier`), and the TF-IDF + linear SVM model (`linear`), which trains without a backbone.

pub mod classifier;
pub mod embed;
pub mod linear;
