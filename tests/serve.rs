//! `bertlu serve` on an ephemeral port with the tiny fixture models, spoken to over real HTTP
//! (reqwest): answers equal `predict`'s, concurrent requests share batches, every bad input gets
//! its status, an API key guards every route but /health, and stopping answers what is in flight.

use bertlu::apps::serve_load::parse_metrics;
use bertlu::infer::embed::EmbedPooling;
use bertlu::infer::classifier::LoadedClassifier;
use bertlu::infer::embed::Embedder;
use bertlu::serve::api::{EmbedResponse, PredictResponse};
use bertlu::serve::{ServeOptions, Server};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn texts() -> Vec<String> {
    std::fs::read_to_string(fixture("v0.1-texts.txt")).unwrap().lines().map(str::to_owned).collect()
}

fn options(model: &str) -> ServeOptions {
    ServeOptions { addr: "127.0.0.1:0".parse().unwrap(), max_wait: Duration::from_millis(2), ..ServeOptions::new(fixture(model)) }
}

async fn post(server: &Server, path: &str, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    post_to(server.addr(), path.to_owned(), body.into()).await
}

async fn post_to(addr: std::net::SocketAddr, path: String, body: reqwest::Body) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new().post(format!("http://{addr}{path}")).header("content-type", "application/json").body(body).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), headers)
}

async fn metrics(server: &Server) -> std::collections::HashMap<String, f64> {
    let text = reqwest::get(format!("http://{}/metrics", server.addr())).await.unwrap().text().await.unwrap();
    parse_metrics(&text)
}

/// `predict --probs --k 5`'s line for one served prediction.
fn line(p: &bertlu::serve::api::Prediction) -> Vec<(String, f32)> {
    p.labels.iter().map(|l| (l.label.clone(), l.probability)).collect()
}

fn assert_close(got: &[(String, f32)], want: &[(String, f32)], what: &str) {
    assert_eq!(got.iter().map(|g| &g.0).collect::<Vec<_>>(), want.iter().map(|w| &w.0).collect::<Vec<_>>(), "{what}: labels");
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() <= 1e-5, "{what}: {} {} vs {}", g.0, g.1, w.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_predict_alone_together_and_as_pairs() {
    for model in ["v0.1-transformer", "v0.1-textcnn"] {
        let clf = LoadedClassifier::open(&fixture(model)).unwrap();
        let texts = texts();
        let thresholds = clf.thresholds(None);
        let expected: Vec<Vec<(String, f32)>> = clf
            .probabilities(&texts, 64)
            .iter()
            .map(|p| bertlu::infer::classifier::decide(p, clf.problem, &thresholds, Some(5)).into_iter().map(|(i, q)| (clf.labels.name(i).to_owned(), q)).collect())
            .collect();
        // and `predict`'s file for these texts: the same labels
        let printed = std::fs::read_to_string(fixture(&format!("{model}.predictions"))).unwrap();
        for (want, printed) in expected.iter().zip(printed.lines()) {
            let names: Vec<&str> = printed.split_whitespace().filter(|w| w.starts_with("__label__")).map(|w| &w[9..]).collect();
            assert_eq!(want.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(), names);
        }
        let server = Server::start(options(model)).await.unwrap();
        // all texts in one request
        let (status, body, _) = post(&server, "/v1/predict", json!({ "texts": texts, "top_k": 5 }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        let all: PredictResponse = serde_json::from_value(body).unwrap();
        assert_eq!(all.predictions.len(), texts.len());
        for (i, p) in all.predictions.iter().enumerate() {
            assert_close(&line(p), &expected[i], &format!("{model} text {i} in one request"));
        }
        // one request a text, all at once: they share batches, and each gets its own answer
        let handles: Vec<_> = texts.iter().map(|t| tokio::spawn(post_to(server.addr(), "/v1/predict".into(), json!({ "texts": [t], "top_k": 5 }).to_string().into()))).collect();
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await.unwrap());
        }
        for (i, (status, body, _)) in answers.into_iter().enumerate() {
            assert_eq!(status, 200);
            let r: PredictResponse = serde_json::from_value(body).unwrap();
            assert_close(&line(&r.predictions[0]), &expected[i], &format!("{model} text {i} alone"));
        }
        // a pair is the text `a<TAB>b`
        let pair = format!("{}\t{}", texts[0], texts[1]);
        let want = clf.probabilities(&[pair], 64);
        let (status, body, _) = post(&server, "/v1/predict", json!({ "pairs": [[texts[0], texts[1]]], "threshold": 0.0 }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        let r: PredictResponse = serde_json::from_value(body).unwrap();
        assert_eq!(r.predictions[0].labels.len(), clf.labels.len(), "threshold 0 chooses every label");
        for l in &r.predictions[0].labels {
            let j = clf.labels.get(&l.label).unwrap();
            assert!((l.probability - want[0][j]).abs() <= 1e-5);
        }
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_run_in_one_batch_and_metrics_say_so() {
    let server = Server::start(ServeOptions { max_wait: Duration::from_millis(300), ..options("v0.1-transformer") }).await.unwrap();
    let addr = server.addr();
    let texts = texts();
    let handles: Vec<_> = texts[..8]
        .iter()
        .map(|t| {
            let body = json!({ "texts": [t] }).to_string();
            tokio::spawn(async move { reqwest::Client::new().post(format!("http://{addr}/v1/predict")).body(body).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    let m = metrics(&server).await;
    let (count, sum) = (m["bertlu_batch_size_count"], m["bertlu_batch_size_sum"]);
    assert_eq!(sum, 8.0, "8 texts answered");
    assert!(count < 8.0, "8 requests within the wait ran in fewer than 8 batches ({count})");
    assert!(m["bertlu_batch_size_bucket{le=\"1.0\"}"] < count, "a batch larger than one text");
    assert_eq!(m["bertlu_requests_total{endpoint=\"/v1/predict\",status=\"200\"}"], 8.0);
    assert_eq!(m["bertlu_examples_total"], 8.0);
    assert!(m["process_resident_memory_bytes"] > 0.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_leaves_the_server_answering() {
    let server = Server::start(ServeOptions { max_body: 4096, max_batch: 4, ..options("v0.1-transformer") }).await.unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/predict", vec![b'x'; 5000], 413, "length limit"),
        ("/v1/predict", json!({ "texts": vec!["a b"; 17] }).to_string().into_bytes(), 413, "17 texts in one request; at most 16"),
        ("/v1/predict", b"{\"texts\": [\"unclosed\"".to_vec(), 400, "EOF while parsing"),
        ("/v1/predict", b"{\"texts\": [\"\xff\xfe\"]}".to_vec(), 400, "invalid unicode"),
        ("/v1/predict", b"{\"texts\": \"one\"}".to_vec(), 400, "invalid type: string"),
        ("/v1/predict", b"{\"texts\": [1]}".to_vec(), 400, "invalid type: integer"),
        ("/v1/predict", b"{\"texts\": [\"a\"], \"topk\": 1}".to_vec(), 400, "unknown field `topk`"),
        ("/v1/predict", b"{\"texts\": [\"a\", \"  \"]}".to_vec(), 400, "texts[1]: empty text"),
        ("/v1/predict", b"{\"texts\": []}".to_vec(), 400, "no texts"),
        ("/v1/predict", b"{}".to_vec(), 400, "missing field `texts`"),
        ("/v1/predict", b"{\"texts\": [\"a\"], \"pairs\": [[\"a\", \"b\"]]}".to_vec(), 400, "not both"),
        ("/v1/predict", b"{\"pairs\": [[\"a\"]]}".to_vec(), 400, "invalid length 1"),
        ("/v1/predict", b"{\"pairs\": [[\"a\", \"\"]]}".to_vec(), 400, "pairs[0][1]: empty text"),
        ("/v1/predict", b"{\"texts\": [\"a\"], \"threshold\": 1.5}".to_vec(), 400, "threshold: 1.5"),
        ("/v1/predict", b"{\"texts\": [\"a\"], \"top_k\": 0}".to_vec(), 400, "top_k"),
        ("/v1/embed", b"{\"texts\": [\"a\"], \"pooling\": \"median\"}".to_vec(), 400, "unknown variant `median`"),
        ("/v1/nothing", b"{}".to_vec(), 404, "no such endpoint"),
    ];
    for (path, body, want, reason) in cases {
        let (status, answer, _) = post(&server, path, body).await;
        assert_eq!(status, want, "{path} {answer}");
        let error = answer["error"].as_str().unwrap_or_else(|| panic!("a JSON error for {reason}: {answer}"));
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
    let (status, _, _) = post(&server, "/v1/predict", json!({ "texts": ["still answering"] }).to_string()).await;
    assert_eq!(status, 200);
    let m = metrics(&server).await;
    assert_eq!(m["bertlu_requests_total{endpoint=\"/v1/predict\",status=\"400\"}"], 13.0);
    assert_eq!(m["bertlu_requests_total{endpoint=\"/v1/predict\",status=\"413\"}"], 2.0);
    assert_eq!(m["bertlu_requests_total{endpoint=\"other\",status=\"404\"}"], 1.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    // the first request opens a round that waits 400 ms for more; the second joins it (2 texts
    // waiting, the queue's size); the third finds the queue full
    let server = Server::start(ServeOptions { max_queue: 2, max_wait: Duration::from_millis(400), ..options("v0.1-transformer") }).await.unwrap();
    let addr = server.addr();
    let send = move || tokio::spawn(async move { reqwest::Client::new().post(format!("http://{addr}/v1/predict")).body(json!({ "texts": ["a network tool"] }).to_string()).send().await.unwrap() });
    let first = send();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let second = send();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let third = send().await.unwrap();
    assert_eq!(third.status().as_u16(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    assert_eq!(first.await.unwrap().status().as_u16(), 200);
    assert_eq!(second.await.unwrap().status().as_u16(), 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_every_route_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret-key\n").unwrap();
    let server = Server::start(ServeOptions { api_key_file: Some(key_file), ..options("v0.1-transformer") }).await.unwrap();
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", server.addr());
    let body = json!({ "texts": ["a network tool"] }).to_string();
    assert_eq!(client.post(url("/v1/predict")).body(body.clone()).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.post(url("/v1/predict")).bearer_auth("s3cret-kez").body(body.clone()).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.post(url("/v1/predict")).bearer_auth("s3cret").body(body.clone()).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.post(url("/v1/predict")).bearer_auth("s3cret-key").body(body).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(client.get(url("/metrics")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.get(url("/health")).send().await.unwrap().status().as_u16(), 200);
    server.stop().await.unwrap();
    // an empty key file is refused before anything listens
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let e = Server::start(ServeOptions { api_key_file: Some(dir.path().join("empty")), ..options("v0.1-transformer") }).await.err().unwrap().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_the_model_description() {
    let server = Server::start(options("v0.1-transformer")).await.unwrap();
    let texts = texts();
    let want = Embedder::open(&fixture("v0.1-transformer")).unwrap().embed(&texts[..5], EmbedPooling::Cls, true, 64);
    let (status, body, _) = post(&server, "/v1/embed", json!({ "texts": &texts[..5], "pooling": "cls", "normalize": true }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let got: EmbedResponse = serde_json::from_value(body).unwrap();
    for (g, w) in got.embeddings.iter().zip(&want) {
        assert_eq!(g.vector.len(), 16);
        assert!(g.vector.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-5));
    }
    // the fixture's max_len is 32: a long text is cut and says so
    let long = vec!["network"; 100].join(" ");
    let (_, body, _) = post(&server, "/v1/predict", json!({ "texts": [long, "short"] }).to_string()).await;
    assert_eq!(body["predictions"][0]["truncated"], true);
    assert_eq!(body["predictions"][1]["truncated"], false);
    let info: serde_json::Value = reqwest::get(format!("http://{}/v1/model", server.addr())).await.unwrap().json().await.unwrap();
    assert_eq!(info["kind"], "classifier");
    assert_eq!(info["problem"], "multi-label");
    assert_eq!(info["labels"].as_array().unwrap().len(), LoadedClassifier::open(&fixture("v0.1-transformer")).unwrap().labels.len());
    assert_eq!(info["model"]["max_len"], 32);
    assert_eq!(info["embedding_dim"], 16);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_the_requests_in_flight() {
    let server = Server::start(ServeOptions { max_wait: Duration::from_millis(500), ..options("v0.1-textcnn") }).await.unwrap();
    let addr = server.addr();
    let in_flight = tokio::spawn(async move { reqwest::Client::new().post(format!("http://{addr}/v1/predict")).body(json!({ "texts": ["a network tool"] }).to_string()).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await.unwrap();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: PredictResponse = r.json().await.unwrap();
    assert_eq!(body.predictions.len(), 1);
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err(), "nothing listens after stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_encoder_embeds_as_transformers_does_and_refuses_to_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = bertlu::apps::import_hf::run(&fixture("hf-tiny-bert"), &dir.path().join("tiny"), false).unwrap();
    let server = Server::start(ServeOptions { model, ..options("unused") }).await.unwrap();
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("hf-tiny-bert/expected.json")).unwrap()).unwrap();
    let case = &expected["cases"][0];
    let hidden: Vec<Vec<f64>> = serde_json::from_value(case["hidden"].clone()).unwrap();
    let mean: Vec<f64> = (0..hidden[0].len()).map(|j| hidden.iter().map(|row| row[j]).sum::<f64>() / hidden.len() as f64).collect();
    let (status, body, _) = post(&server, "/v1/embed", json!({ "texts": case["texts"] }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let got: EmbedResponse = serde_json::from_value(body).unwrap();
    assert_eq!(got.embeddings[0].vector.len(), mean.len());
    for (g, w) in got.embeddings[0].vector.iter().zip(&mean) {
        assert!((*g as f64 - w).abs() <= 1e-4, "mean-pooled {g} vs transformers' {w}");
    }
    let (status, body, _) = post(&server, "/v1/predict", json!({ "texts": ["a"] }).to_string()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("/v1/embed only"), "{body}");
    server.stop().await.unwrap();
}

/// Starts `bertlu serve` on a free port; returns the child, its standard error after the first
/// line, and the address that line names.
fn spawn_server() -> (std::process::Child, std::io::BufReader<std::process::ChildStderr>, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bertlu"))
        .args(["serve", "--model"])
        .arg(fixture("v0.1-textcnn"))
        .args(["--addr", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("no address in {first:?}")).to_owned();
    (child, stderr, addr)
}

/// Sends SIGTERM to `child` and checks that it stopped gracefully, with exit status 0.
fn terminate_gracefully(mut child: std::process::Child, mut stderr: std::io::BufReader<std::process::ChildStderr>) {
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(exit.success(), "exit {exit:?}: {rest}");
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn the_serve_command_stops_on_sigterm_with_exit_0() {
    let (child, stderr, addr) = spawn_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async { reqwest::get(format!("http://{addr}/health")).await.unwrap().status().as_u16() });
    assert_eq!(status, 200);
    terminate_gracefully(child, stderr);
    // a SIGTERM as soon as the server says where it listens (a supervisor stopping it at once)
    // stops it gracefully too: the signals are listened for before it starts
    let (child, stderr, _) = spawn_server();
    terminate_gracefully(child, stderr);
}

#[test]
fn serve_refuses_a_missing_model_and_a_busy_address_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bertlu")).args(["serve", "--model", "/nonexistent/model"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model") && err.trim().lines().count() == 1, "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bertlu")).args(["serve", "--addr", &addr, "--model"]).arg(fixture("v0.1-textcnn")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("cannot listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_predicts_its_mean_and_refuses_to_embed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bertlu::apps::ensemble::EnsembleSpec { models: vec![fixture("v0.1-transformer"), fixture("v0.1-textcnn")], weights: vec![], out: dir.path().join("ens"), threshold: None, max_len: None, overwrite: false };
    let (path, _) = bertlu::apps::ensemble::build(&spec, None).unwrap();
    let clf = LoadedClassifier::open(&path).unwrap();
    let texts = texts();
    let want = clf.probabilities(&texts[..6], 64);
    let server = Server::start(ServeOptions { model: path, ..options("unused") }).await.unwrap();
    let (status, body, _) = post(&server, "/v1/predict", json!({ "texts": &texts[..6], "threshold": 0.0 }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let got: PredictResponse = serde_json::from_value(body).unwrap();
    for (p, w) in got.predictions.iter().zip(&want) {
        assert_eq!(p.labels.len(), clf.labels.len());
        for l in &p.labels {
            assert!((l.probability - w[clf.labels.get(&l.label).unwrap()]).abs() <= 1e-5);
        }
    }
    let (status, body, _) = post(&server, "/v1/embed", json!({ "texts": ["a"] }).to_string()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("/v1/predict only"), "{body}");
    let info: serde_json::Value = reqwest::get(format!("http://{}/v1/model", server.addr())).await.unwrap().json().await.unwrap();
    assert_eq!((info["kind"].as_str(), info["members"].as_array().map(|m| m.len()), info["embedding_dim"].as_u64()), (Some("ensemble"), Some(2), Some(0)));
    server.stop().await.unwrap();
}
