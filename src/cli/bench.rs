//! `bertlu bench`: speed and memory of training steps and inference, one case a process.

use anyhow::{bail, Context, Result};
use bertlu::apps::bench::{matmul_peak_gflops, measure, table, Case, Measurement, Setting};
use clap::Args;

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model settings to measure (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub setting: Vec<Setting>,
    /// Cases to measure (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub case: Vec<Case>,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed iterations (the table reports their median and range).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Print one JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Number format of the matrix-product inputs of the training cases and of --model's passes (bf16: mixed precision, on CPUs with AVX-512 BF16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: bertlu::config::Precision,
    /// Measure in this process and print one JSON object (what each child process runs).
    #[arg(long, hide = true)]
    pub child: bool,
    /// Measure a fine-tuned model on real text instead (with --data): batched passes over the
    /// file and one-example-at-a-time latency, tokenising included, as `predict` runs.
    #[arg(long, requires = "data")]
    pub model: Option<std::path::PathBuf>,
    /// Labelled or plain text file for --model or --serve (label words are ignored).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Load-test a running `bertlu serve` at this URL (e.g. http://127.0.0.1:8080) with the
    /// texts of --data: closed-loop clients, one text a request unless --texts-per-request.
    #[arg(long, requires = "data")]
    pub serve: Option<String>,
    /// With --serve: concurrent clients of each level (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// With --serve: seconds each level lasts.
    #[arg(long, default_value_t = 120.0)]
    pub duration: f64,
    /// With --serve: shares of malformed requests; every level runs once per share (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,0.05")]
    pub malformed: Vec<f64>,
    /// With --serve: texts a request.
    #[arg(long, default_value_t = 1)]
    pub texts_per_request: usize,
    /// With --serve: seconds of unmeasured load first (at the most clients), so that the
    /// memory figures start after the allocator has seen the largest batches.
    #[arg(long, default_value_t = 30.0)]
    pub warmup_seconds: f64,
    /// With --serve: the file holding the server's API key.
    #[arg(long)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// With --serve: the served model's directory, measured offline in this process first
    /// (throughput to compare with) and used to check every answer's labels.
    #[arg(long)]
    pub offline_model: Option<std::path::PathBuf>,
    /// Batch size of the --model passes.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Examples timed one at a time with --model.
    #[arg(long, default_value_t = 200)]
    pub singles: usize,
    /// Random seed of the synthetic batches and weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs `bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if let (Some(url), Some(data)) = (&a.serve, &a.data) {
        return load_test(&a, url, data);
    }
    if a.data.is_some() && a.model.is_none() {
        bail!("--data needs --model (or --serve)");
    }
    if let (Some(model), Some(data)) = (&a.model, &a.data) {
        if let Some(note) = bertlu::model::kernels::bf16_unavailable(a.precision, "bench", "measuring") {
            eprintln!("{note}");
        }
        let m = bertlu::apps::bench::measure_model(model, data, a.batch_size, a.iters, a.singles, a.precision)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&m)?);
        } else {
            let peak = matmul_peak_gflops();
            print!("{}", bertlu::apps::bench::model_table(&m, Some(peak)));
            println!("{} threads; median of {} passes after one warm-up pass; peak RSS {} MiB.", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), a.iters, m.peak_rss_mib.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into()));
            println!("{}", peak_note(peak));
        }
        return Ok(());
    }
    let settings = if a.setting.is_empty() { Setting::ALL.to_vec() } else { a.setting.clone() };
    let cases = if a.case.is_empty() { Case::ALL.to_vec() } else { a.case.clone() };
    if a.child {
        let [setting] = settings[..] else { bail!("--child measures one setting") };
        let [case] = cases[..] else { bail!("--child measures one case") };
        let _precision = bertlu::model::kernels::precision_scope(a.precision);
        println!("{}", serde_json::to_string(&measure(setting, case, a.warmup, a.iters, a.seed)?)?);
        return Ok(());
    }
    if let Some(note) = bertlu::model::kernels::bf16_unavailable(a.precision, "bench", "measuring") {
        eprintln!("{note}");
    }
    // A process per case, so each peak-memory figure is that case's alone.
    let exe = std::env::current_exe().context("cannot find the bertlu executable")?;
    let mut out: Vec<Measurement> = Vec::new();
    for &setting in &settings {
        for &case in &cases {
            if !a.json {
                eprintln!("bench: {} {case:?} …", setting.name());
            }
            let o = std::process::Command::new(&exe)
                .args(["bench", "--child", "--setting", &setting.name(), "--case", &format!("{case:?}").to_lowercase()])
                .args(["--warmup", &a.warmup.to_string(), "--iters", &a.iters.to_string(), "--seed", &a.seed.to_string()])
                .args(["--precision", &format!("{:?}", a.precision).to_lowercase()])
                .output()
                .context("cannot run a bench process")?;
            if !o.status.success() {
                bail!("bench {} {case:?} failed: {}", setting.name(), String::from_utf8_lossy(&o.stderr).trim());
            }
            out.push(serde_json::from_slice(&o.stdout).context("bench process output")?);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let peak = matmul_peak_gflops();
        println!("{}", table(&out, Some(peak)));
        println!("{} threads; median and range over {} iterations after {} warm-up; synthetic batches of 128 word pieces, vocabulary {}.", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), a.iters, a.warmup, bertlu::apps::bench::VOCAB);
        println!("{}", peak_note(peak));
    }
    Ok(())
}

/// What the GFLOP/s columns count and compare with.
fn peak_note(peak: f64) -> String {
    format!("GFLOP/s: the matrix products' floating-point operations (real word pieces; training steps count forward and backward) a second; of peak: against {peak:.0} GFLOP/s, one 1024³ f32 matrix product on every thread here.")
}

/// `bench --serve`.
fn load_test(a: &BenchArgs, url: &str, data: &std::path::Path) -> Result<()> {
    use bertlu::apps::serve_load::{offline, read_texts, run, table, LoadSpec};
    let texts = read_texts(data)?;
    let api_key = a.api_key_file.as_ref().map(|f| std::fs::read_to_string(f).map(|k| k.trim().to_owned()).with_context(|| format!("{}: cannot read", f.display()))).transpose()?;
    let reference = match &a.offline_model {
        Some(m) => {
            eprintln!("bench --serve: {} offline …", m.display());
            Some(offline(m, &texts)?)
        }
        None => None,
    };
    let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
    let spec = LoadSpec { url: url.to_owned(), texts, clients: a.clients.clone(), duration: secs(a.duration), warmup: secs(a.warmup_seconds), malformed: a.malformed.clone(), texts_per_request: a.texts_per_request, api_key, seed: a.seed };
    let report = run(&spec, reference)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
        println!("{} texts from {}, {} a request; {:.0} s a level after {:.0} s of warm-up.", spec.texts.len(), data.display(), a.texts_per_request, a.duration, a.warmup_seconds);
    }
    Ok(())
}
