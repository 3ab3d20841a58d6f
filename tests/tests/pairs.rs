//! Pairs trading with real statsmodels and real Jesse: synthetic 1m series
//! (four random walks and one planted cointegrated pair, B = 0.7·A + AR(1)
//! noise) imported through the API; the screen ranks the planted pair first
//! and rejects every random pair at 5 %; each statistic equals statsmodels
//! called directly (tests/fixtures/reference_pairs.py, which resamples the
//! same CSV files with pandas on its own); a pairs backtest trades both legs
//! with quantities in the hedge ratio's proportion; bad requests are 422s.

use std::collections::BTreeMap;
use std::time::Duration;

use jesse_mcp_core::rng::SplitMix64;
use jesse_mcp_tests::*;
use serde_json::{Value, json};

const PLANTED: [&str; 2] = ["AAA-USDT", "BBB-USDT"];
const RANDOM: [&str; 3] = ["CCC-USDT", "DDD-USDT", "EEE-USDT"];
const DATA_START: &str = "2024-01-01";
const DATA_END: &str = "2024-01-07";
const START: &str = "2024-01-02";
const END: &str = "2024-01-07";

fn ms(day: &str) -> i64 {
    jesse_mcp_core::time::parse_day(day).unwrap()
}

fn normal(rng: &mut SplitMix64) -> f64 {
    let u = |rng: &mut SplitMix64| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (u(rng), u(rng));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// 1m candles of a close path as CSV (open = previous close).
fn csv(closes: &[f64]) -> String {
    let start = ms(DATA_START);
    let mut out = String::from("timestamp,open,high,low,close,volume\n");
    let mut open = closes[0];
    for (i, close) in closes.iter().enumerate() {
        let high = open.max(*close) * 1.0001;
        let low = open.min(*close) * 0.9999;
        out.push_str(&format!(
            "{},{open},{high},{low},{close},1\n",
            start + i as i64 * 60_000
        ));
        open = *close;
    }
    out
}

/// The five series: a log random walk A, B = 0.7·A + AR(1) noise (φ = 0.99
/// per minute), and three more random walks.
fn series() -> BTreeMap<&'static str, Vec<f64>> {
    let minutes = ((ms(DATA_END) - ms(DATA_START)) / 60_000) as usize;
    let walk = |seed: u64, start: f64| {
        let mut rng = SplitMix64::new(seed);
        let mut log = start.ln();
        (0..minutes)
            .map(|_| {
                log += 0.0005 * normal(&mut rng);
                log.exp()
            })
            .collect::<Vec<f64>>()
    };
    let a = walk(11, 100.0);
    let mut rng = SplitMix64::new(12);
    let mut u = 0.0;
    let b: Vec<f64> = a
        .iter()
        .map(|a| {
            u = 0.99 * u + 0.03 * normal(&mut rng);
            0.7 * a + u
        })
        .collect();
    let mut all = BTreeMap::new();
    all.insert(PLANTED[0], a);
    all.insert(PLANTED[1], b);
    for (k, symbol) in RANDOM.iter().enumerate() {
        all.insert(*symbol, walk(21 + k as u64, 50.0 + 30.0 * k as f64));
    }
    all
}

async fn import(
    app: &TestApp,
    dir: &std::path::Path,
    series: BTreeMap<&'static str, Vec<f64>>,
) -> BTreeMap<String, String> {
    let mut paths = BTreeMap::new();
    for (symbol, closes) in series {
        let text = csv(&closes);
        let path = dir.join(format!("{symbol}.csv"));
        std::fs::write(&path, &text).unwrap();
        let url = format!(
            "/v1/candles/csv?exchange={}&symbol={symbol}",
            EXCHANGE.replace(' ', "%20")
        );
        let (status, body) = app.post_raw(&url, "text/csv", text.into_bytes()).await;
        assert_eq!(status, 200, "{body}");
        paths.insert(symbol.to_string(), path.display().to_string());
    }
    paths
}

async fn reference(spec: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let output = tokio::process::Command::new(venv_python())
        .arg(repo_root().join("tests/fixtures/reference_pairs.py"))
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

async fn done(app: &TestApp, path: &str, body: &Value) -> (String, Value) {
    let (status, accepted) = app.post_json(path, body).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 200, "{result}");
    (id, result)
}

/// Same number up to the last bits (the service and the reference run the
/// same statsmodels on the same arrays).
fn same(ours: &Value, theirs: &Value, what: &str) {
    match (ours.as_f64(), theirs.as_f64()) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "{what}: service {a} vs statsmodels {b}"
        ),
        _ => assert_eq!(ours, theirs, "{what}"),
    }
}

fn same_list(ours: &Value, theirs: &Value, what: &str) {
    let (a, b) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.is_array() {
            same_list(x, y, &format!("{what}[{i}]"));
        } else {
            same(x, y, &format!("{what}[{i}]"));
        }
    }
}

/// A screen row's Kalman filter against statsmodels' KalmanFilter with the
/// same prior (reference_pairs.py): the parameters, the summaries and every
/// point of the path (matched by bar time) to 1e-8.
fn check_kalman(ours: &Value, theirs: &Value, key: &str) {
    assert_eq!(ours["delta"], 1e-4, "{key}: {ours}");
    assert_eq!(ours["warmup_bars"], theirs["warmup_bars"], "{key}");
    let close = |a: &Value, b: &Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-8 * (1.0 + b.abs()),
            "{key} kalman {what}: service {a} vs statsmodels {b}"
        );
    };
    close(
        &ours["observation_variance"],
        &theirs["observation_variance"],
        "observation_variance",
    );
    close(
        &ours["prior"]["intercept"],
        &theirs["prior_intercept"],
        "prior intercept",
    );
    close(
        &ours["prior"]["hedge_ratio"],
        &theirs["prior_hedge_ratio"],
        "prior hedge_ratio",
    );
    for i in 0..2 {
        for j in 0..2 {
            close(
                &ours["prior"]["covariance"][i][j],
                &theirs["prior_covariance"][i][j],
                "prior covariance",
            );
        }
    }
    for name in [
        "hedge_ratio_last",
        "intercept_last",
        "hedge_ratio_mean",
        "hedge_ratio_std",
        "hedge_ratio_min",
        "hedge_ratio_max",
    ] {
        close(&ours[name], &theirs[name], name);
    }
    let reference: BTreeMap<i64, f64> = theirs["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    let path = ours["path"].as_array().unwrap();
    assert!(
        path.len() > 100 && path.len() <= 200,
        "{key}: {}",
        path.len()
    );
    for point in path {
        // Read as every time is: integer ms with its RFC 3339 `date` (docs/RESULTS.md).
        let time = point["time"].as_i64().unwrap_or_else(|| panic!("{point}"));
        assert_eq!(
            point["date"],
            jesse_mcp_core::time::to_rfc3339(time),
            "{point}"
        );
        let theirs = reference
            .get(&time)
            .unwrap_or_else(|| panic!("{key}: no filtered bar at {point}"));
        close(&point["hedge_ratio"], &json!(theirs), "path");
    }
    // The path starts with the first filtered bar (after the warm-up) and ends with the last bar.
    assert_eq!(
        path[0]["time"].as_i64(),
        reference.keys().next().copied(),
        "{key}"
    );
    assert_eq!(
        path.last().unwrap()["time"].as_i64(),
        reference.keys().last().copied(),
        "{key}"
    );
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_finds_the_planted_pair_and_the_strategy_trades_both_legs() {
    let app = TestApp::spawn(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let paths = import(&app, dir.path(), series()).await;

    // Refused at submit, naming the field.
    let base =
        json!({"exchange": EXCHANGE, "start_date": START, "end_date": END, "timeframe": "15m"});
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, expected, field) in [
        (
            with(json!({"symbols": ["AAA-USDT"]})),
            "too_few_symbols",
            "symbols",
        ),
        (
            with(json!({"symbols": ["AAA-USDT", "ZZZ-USDT"]})),
            "no_candles",
            "symbols",
        ),
        (
            with(json!({"symbols": ["AAA-USDT", "AAA-USDT"]})),
            "invalid_symbols",
            "symbols",
        ),
        (
            with(json!({"significance": 0.0})),
            "invalid_number",
            "significance",
        ),
        (
            with(json!({"significance": 1.5})),
            "invalid_number",
            "significance",
        ),
        (
            with(json!({"timeframe": "1W"})),
            "unsupported_timeframe",
            "timeframe",
        ),
        // 2 days of 1D bars: far below the 100 shared bars a pair needs.
        (
            with(json!({"timeframe": "1D"})),
            "insufficient_overlap",
            "symbols",
        ),
        (
            with(json!({"start_date": "2020-01-01", "end_date": "2024-01-07", "timeframe": "1m"})),
            "too_many_bars",
            "timeframe",
        ),
        (
            with(json!({"start_date": "2023-01-01", "end_date": "2023-02-01"})),
            "too_few_symbols",
            "symbols",
        ),
        (
            with(json!({"exchange": "Nowhere"})),
            "unsupported_exchange",
            "exchange",
        ),
        (
            with(json!({"pairs_per_job": 0})),
            "invalid_number",
            "pairs_per_job",
        ),
    ] {
        let (status, error) = app.post_json("/v1/pairs/screen", &body).await;
        assert_eq!((status, code(&error)), (422, expected), "{body}: {error}");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }
    // Overlap counted on the stored ranges: a series with only 20 hours in
    // the range shares 80 bars of 15m with the others.
    let short: String = csv(&series()[PLANTED[0]][..24 * 60 + 20 * 60]);
    let url = format!(
        "/v1/candles/csv?exchange={}&symbol=SHORT-USDT",
        EXCHANGE.replace(' ', "%20")
    );
    let (status, body) = app.post_raw(&url, "text/csv", short.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let (status, error) = app
        .post_json(
            "/v1/pairs/screen",
            &with(json!({"symbols": ["AAA-USDT", "SHORT-USDT"]})),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (422, "insufficient_overlap"),
        "{error}"
    );
    assert_eq!(error["error"]["details"]["bars"], 80, "{error}");
    assert_eq!(app.job_count().await, 0, "a refused submit creates no job");

    // The screen, in chunks of 3 pairs (4 child jobs), with the Kalman filter.
    let mut symbols: Vec<&str> = PLANTED.to_vec();
    symbols.extend(RANDOM);
    let body = with(json!({"symbols": symbols, "kalman": true, "pairs_per_job": 3}));
    let (screen_id, result) = done(&app, "/v1/pairs/screen", &body).await;
    let rows = result["pairs"].as_array().unwrap().clone();
    assert_eq!(result["total"], 10);
    assert_eq!(result["pairs_total"], 10);
    assert_eq!(rows.len(), 10);
    assert_eq!(result["setup"]["children"].as_array().unwrap().len(), 4);
    let (_, children) = app.get(&format!("/v1/jobs/{screen_id}/children")).await;
    assert!(
        children.to_string().contains("pairs_screen_chunk"),
        "{children}"
    );

    // The planted pair first and cointegrated; every random pair rejected with a reason.
    assert_eq!(rows[0]["symbols"], json!(PLANTED), "{}", rows[0]);
    assert_eq!(rows[0]["cointegrated"], true, "{}", rows[0]);
    assert_eq!(rows[0]["rank"], 1);
    assert!(rows[0]["reason"].is_null());
    assert_eq!(result["cointegrated"], 1, "{result}");
    for row in &rows[1..] {
        assert_eq!(row["cointegrated"], false, "{row}");
        assert!(
            row["reason"]
                .as_str()
                .unwrap()
                .starts_with("engle_granger_p="),
            "{row}"
        );
    }
    // Ranked by the larger Engle–Granger p-value among the rejected.
    let worst = |r: &Value| {
        r["engle_granger"]["a_on_b"]["p_value"]
            .as_f64()
            .unwrap()
            .max(r["engle_granger"]["b_on_a"]["p_value"].as_f64().unwrap())
    };
    for w in rows[1..].windows(2) {
        assert!(worst(&w[0]) <= worst(&w[1]), "ranking: {} {}", w[0], w[1]);
    }
    // Provenance: every series' candles, as loaded.
    let candles = &result["provenance"]["candles"];
    for symbol in &symbols {
        let print = &candles[format!("{EXCHANGE}-{symbol}")];
        assert_eq!(print["rows"], 5 * 1440, "{print}");
        assert_eq!(print["sha256"].as_str().unwrap().len(), 64);
    }
    assert_eq!(result["provenance"]["versions"]["statsmodels"], "0.14.6");

    // Every statistic equals statsmodels on the same arrays.
    let pairs: Vec<Value> = rows.iter().map(|r| r["symbols"].clone()).collect();
    let expected = reference(
        &json!({"csv": paths, "start_ms": ms(START), "end_ms": ms(END),
        "minutes": 15, "pairs": pairs, "kalman": true, "delta": 1e-4}),
    )
    .await;
    for row in &rows {
        let key = format!(
            "{}|{}",
            row["symbols"][0].as_str().unwrap(),
            row["symbols"][1].as_str().unwrap()
        );
        let theirs = &expected["pairs"][&key];
        assert_eq!(row["bars"], theirs["bars"], "{key}");
        assert_eq!(row["bars"], 480, "{key}");
        same(
            &row["correlation_of_returns"],
            &theirs["correlation_of_returns"],
            &format!("{key} correlation"),
        );
        for (ours, name) in [("a_on_b", "eg_a_on_b"), ("b_on_a", "eg_b_on_a")] {
            let eg = &row["engle_granger"][ours];
            same(&eg["t_stat"], &theirs[name][0], &format!("{key} {ours} t"));
            same(&eg["p_value"], &theirs[name][1], &format!("{key} {ours} p"));
            for (i, level) in ["1%", "5%", "10%"].iter().enumerate() {
                same(
                    &eg["crit_values"][level],
                    &theirs[name][2][i],
                    &format!("{key} {ours} crit {level}"),
                );
            }
        }
        let j = &row["johansen"];
        same_list(&j["trace_stat"], &theirs["johansen"]["lr1"], "trace");
        same_list(&j["trace_crit_90_95_99"], &theirs["johansen"]["cvt"], "cvt");
        same_list(&j["max_eig_stat"], &theirs["johansen"]["lr2"], "max eig");
        same_list(
            &j["max_eig_crit_90_95_99"],
            &theirs["johansen"]["cvm"],
            "cvm",
        );
        same_list(&j["eigenvalues"], &theirs["johansen"]["eig"], "eig");
        for name in ["hedge_ratio", "intercept", "r_squared"] {
            same(
                &row["ols"][name],
                &theirs["ols"][name],
                &format!("{key} {name}"),
            );
        }
        same(
            &row["ou_lambda"],
            &theirs["ou_lambda"],
            &format!("{key} lambda"),
        );
        same(
            &row["half_life_bars"],
            &theirs["half_life_bars"],
            &format!("{key} half-life"),
        );
        same(
            &row["spread_zscore"],
            &theirs["spread_zscore"],
            &format!("{key} z"),
        );
        check_kalman(&row["kalman"], &theirs["kalman"], &key);
        assert_eq!(
            row["first_bar"].as_str().unwrap(),
            "2024-01-02T00:00:00.000Z"
        );
        assert_eq!(theirs["first_bar_ms"], ms(START));
    }
    // The planted relation: B ≈ 0.7·A, so A on B has a ratio near 1/0.7, and
    // the spread reverts within a few bars.
    let beta = rows[0]["ols"]["hedge_ratio"].as_f64().unwrap();
    assert!((beta - 1.0 / 0.7).abs() < 0.15, "{beta}");
    let half_life = rows[0]["half_life_bars"].as_f64().unwrap();
    assert!(half_life > 1.0 && half_life < 30.0, "{half_life}");
    assert_eq!(rows[0]["johansen"]["rank_95"], 1, "{}", rows[0]);

    // Pairs backtest from the screen's best pair: hedge_method fixed at its OLS ratio.
    let (status, error) = app
        .post_json(
            "/v1/pairs/backtest",
            &json!({"screen_job_id": screen_id, "pair_rank": 11}),
        )
        .await;
    assert_eq!((status, code(&error)), (422, "invalid_number"), "{error}");
    let (status, error) = app
        .post_json(
            "/v1/pairs/backtest",
            &json!({"screen_job_id": "01NOPE", "pair_rank": 1}),
        )
        .await;
    assert_eq!((status, code(&error)), (422, "unknown_source"), "{error}");
    let (status, error) = app
        .post_json(
            "/v1/pairs/backtest",
            &json!({"symbols": ["AAA-USDT"], "exchange": EXCHANGE, "timeframe": "15m",
                    "start_date": "2024-01-03", "end_date": END}),
        )
        .await;
    assert_eq!((status, code(&error)), (422, "invalid_symbols"), "{error}");
    let (status, error) = app
        .post_json(
            "/v1/pairs/backtest",
            &json!({"screen_job_id": screen_id, "start_date": "2024-01-03",
                    "hyperparameters": {"entry_zz": 2}}),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (422, "unknown_hyperparameter"),
        "{error}"
    );

    let body = json!({"screen_job_id": screen_id, "pair_rank": 1, "start_date": "2024-01-03",
                      "warm_up_candles": 96, "hyperparameters": {"lookback": 96}});
    let (_, pairs_result) = done(&app, "/v1/pairs/backtest", &body).await;
    assert_eq!(pairs_result["symbols"], json!(PLANTED));
    same(
        &pairs_result["pair"]["screen_hedge_ratio"],
        &json!(beta),
        "screen ratio",
    );
    assert_eq!(pairs_result["hyperparameters"]["hedge_method"], "fixed");
    let legs = leg_trades(&app, &pairs_result, PLANTED).await;
    let (a, b) = (&legs[PLANTED[0]], &legs[PLANTED[1]]);
    assert!(a.len() >= 2, "too few trades to check: {a:?}");
    assert_eq!(a.len(), b.len(), "both legs trade together");
    for (ta, tb) in a.iter().zip(b) {
        assert_eq!(ta["opened_at"], tb["opened_at"], "{ta} {tb}");
        assert_eq!(ta["closed_at"], tb["closed_at"], "{ta} {tb}");
        assert_ne!(
            ta["type"], tb["type"],
            "opposite sides for a positive ratio"
        );
        let ratio = tb["qty"].as_f64().unwrap() / ta["qty"].as_f64().unwrap();
        assert!(
            (ratio - beta).abs() <= 1e-9 * beta,
            "qty ratio {ratio} vs hedge ratio {beta}"
        );
    }

    // The same pair named directly, with the rolling OLS hedge ratio: both
    // legs still trade together, sized by the ratio the strategy estimated
    // (close to the screen's, the planted relation being stable).
    let body = json!({"symbols": PLANTED, "exchange": EXCHANGE, "timeframe": "15m",
                      "start_date": "2024-01-03", "end_date": END, "warm_up_candles": 96,
                      "hyperparameters": {"lookback": 96, "hedge_method": "ols"}});
    let (_, ols_result) = done(&app, "/v1/pairs/backtest", &body).await;
    let legs = leg_trades(&app, &ols_result, PLANTED).await;
    let (a, b) = (&legs[PLANTED[0]], &legs[PLANTED[1]]);
    assert!(!a.is_empty() && a.len() == b.len(), "{a:?} {b:?}");
    for (ta, tb) in a.iter().zip(b) {
        assert_eq!(ta["opened_at"], tb["opened_at"]);
        let ratio = tb["qty"].as_f64().unwrap() / ta["qty"].as_f64().unwrap();
        assert!(
            (ratio - beta).abs() < 0.5 * beta,
            "rolling ratio {ratio} far from {beta}"
        );
    }

    // The strategy passes static and deep validation.
    let source =
        std::fs::read_to_string(repo_root().join("strategies/PairsTrading/__init__.py")).unwrap();
    let (status, report) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "PairsTrading", "code": source, "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["deep"]["valid"], true, "{report}");
}

/// The Kalman hedge ratio tracks the cointegration slope: on a planted pair
/// Y = 0.8·X + 20 + OU noise the screen's filtered β ends within 5 % of the
/// OLS slope and of 0.8, its whole path equals statsmodels' state-space
/// KalmanFilter with the same prior to 1e-8, and PairsTrading's
/// `hedge_method: kalman` sizes B at the β the same filter gives on each
/// entry bar's window. (The old filter, started at x₀ = 0 with P₀ = 0, ended
/// near mean(Y)/mean(X) ≈ 1.0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kalman_hedge_ratio_tracks_the_planted_slope() {
    const Y: &str = "PPP-USDT";
    const X: &str = "QQQ-USDT";
    let minutes = ((ms(DATA_END) - ms(DATA_START)) / 60_000) as usize;
    let mut rng = SplitMix64::new(31);
    let mut log = 100f64.ln();
    let x: Vec<f64> = (0..minutes)
        .map(|_| {
            log += 0.001 * normal(&mut rng);
            log.exp()
        })
        .collect();
    // OU noise: φ = 0.95 per minute (0.46 per 15m bar), stationary std ≈ 0.16.
    let mut rng = SplitMix64::new(32);
    let mut u = 0.0;
    let y: Vec<f64> = x
        .iter()
        .map(|x| {
            u = 0.95 * u + 0.05 * normal(&mut rng);
            0.8 * x + 20.0 + u
        })
        .collect();
    let app = TestApp::spawn(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let paths = import(&app, dir.path(), BTreeMap::from([(Y, y), (X, x)])).await;

    let body = json!({"exchange": EXCHANGE, "symbols": [Y, X], "start_date": START, "end_date": END,
                      "timeframe": "15m", "kalman": true});
    let (_, result) = done(&app, "/v1/pairs/screen", &body).await;
    let row = &result["pairs"][0];
    assert_eq!(row["symbols"], json!([Y, X]), "{row}");
    let kalman = &row["kalman"];

    let bar = 15 * 60_000;
    let backtest_start = ms("2024-01-03");
    let expected = reference(&json!({
        "csv": paths, "start_ms": ms(START), "end_ms": ms(END), "minutes": 15,
        "pairs": [[Y, X]], "kalman": true, "delta": 1e-4,
        "windows": {"pair": [Y, X], "start_ms": backtest_start - 96 * bar, "end_ms": ms(END), "lookback": 96},
    }))
    .await;
    let beta = kalman["hedge_ratio_last"].as_f64().unwrap();
    let ols = row["ols"]["hedge_ratio"].as_f64().unwrap();
    assert!((ols - 0.8).abs() < 0.02 * 0.8, "OLS slope {ols}");
    assert!(
        (beta - ols).abs() < 0.05 * ols,
        "Kalman β {beta} vs OLS {ols}"
    );
    assert!((beta - 0.8).abs() < 0.05 * 0.8, "Kalman β {beta} vs 0.8");
    for name in ["hedge_ratio_min", "hedge_ratio_max"] {
        let b = kalman[name].as_f64().unwrap();
        assert!((b - 0.8).abs() < 0.1 * 0.8, "{name} {b}");
    }

    assert_eq!(kalman["warmup_bars"], 120, "{kalman}");
    check_kalman(
        kalman,
        &expected["pairs"][format!("{Y}|{X}")]["kalman"],
        "planted",
    );

    // PairsTrading with hedge_method kalman: B's quantity over A's is the
    // filtered β of the 96 bars ending with the entry bar.
    let body = json!({"symbols": [Y, X], "exchange": EXCHANGE, "timeframe": "15m",
                      "start_date": "2024-01-03", "end_date": END, "warm_up_candles": 96,
                      "hyperparameters": {"lookback": 96, "hedge_method": "kalman"}});
    let (_, pairs_result) = done(&app, "/v1/pairs/backtest", &body).await;
    let windows: BTreeMap<i64, f64> = expected["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w[0].as_i64().unwrap(), w[1].as_f64().unwrap()))
        .collect();
    assert_eq!(
        windows.len(),
        96 * 4 + 1,
        "windows from the last warm-up bar on"
    );
    let legs = leg_trades(&app, &pairs_result, [Y, X]).await;
    let (a, b) = (&legs[Y], &legs[X]);
    assert!(a.len() >= 2 && a.len() == b.len(), "{a:?} {b:?}");
    for (ta, tb) in a.iter().zip(b) {
        assert_eq!(ta["opened_at"], tb["opened_at"]);
        let ratio = tb["qty"].as_f64().unwrap() / ta["qty"].as_f64().unwrap();
        // The entry is decided on the bar that closed at `opened_at`.
        let opened = ta["opened_at"].as_i64().unwrap();
        let theirs = windows
            .get(&(opened - bar))
            .unwrap_or_else(|| panic!("no window for the bar before {ta}"));
        assert!(
            (ratio - theirs).abs() <= 1e-8 * theirs,
            "qty ratio {ratio} vs statsmodels' filtered β {theirs} at {opened}"
        );
        assert!((ratio - 0.8).abs() < 0.1 * 0.8, "{ratio}");
    }
}

/// Both legs' trades of a pairs backtest (read from its child backtest), by symbol.
async fn leg_trades(
    app: &TestApp,
    pairs_result: &Value,
    symbols: [&str; 2],
) -> BTreeMap<String, Vec<Value>> {
    let id = pairs_result["backtest_job_id"].as_str().unwrap();
    let (status, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["kind"], "backtest", "{job}");
    let (status, result) = app
        .get(&format!("/v1/jobs/{id}/result?include_trades=true"))
        .await;
    assert_eq!(status, 200, "{result}");
    let mut legs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for symbol in symbols {
        legs.insert(symbol.to_string(), Vec::new());
    }
    for trade in result["trades"].as_array().unwrap() {
        legs.entry(trade["symbol"].as_str().unwrap().to_string())
            .or_default()
            .push(trade.clone());
    }
    for trades in legs.values_mut() {
        trades.sort_by_key(|t| t["opened_at"].as_i64());
    }
    legs
}

/// The screen (the runner) and PairsTrading run the same Kalman filter: the
/// strategy must stay a self-contained file Jesse can load on its own, so the
/// function is copied, and the copies must not drift apart.
#[test]
fn the_screen_and_the_strategy_share_one_kalman_filter() {
    let function = |path: &str| {
        let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
        let start = text
            .find("def kalman_hedge(")
            .unwrap_or_else(|| panic!("{path} defines no kalman_hedge"));
        let end = text[start..]
            .find("\n\n\n")
            .map_or(text.len(), |e| start + e);
        text[start..end].to_string()
    };
    assert_eq!(
        function("worker/python/jesse_mcp_runner.py"),
        function("strategies/PairsTrading/__init__.py")
    );
}
