//! Analysis, comparison and charts of finished jobs, for REST and MCP alike.
//! Synchronous: each answer is computed from what a job stored (its result
//! body and rows), never by running anything; the statistics are
//! `jesse_mcp_core::analysis`'s, the drawings `crate::charts`'.

use jesse_mcp_core::analysis::{
    self, Analysis, Comparison, EquityPoint, Source, TOP_DRAWDOWNS, daily_returns,
    drawdown_periods, monthly_returns, portfolio_curve, quantile, return_distribution,
    yearly_returns,
};
use jesse_mcp_core::jobs::JobStatus;
use jesse_mcp_core::store::JobRecord;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Service, require_succeeded};
use crate::charts::{self, Chart, Marker, Size};
use crate::error::ApiError;

/// The most backtests one comparison takes.
pub const MAX_COMPARED: usize = 20;

/// `POST /v1/compare` and the MCP `compare` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// 2 to 20 ids of succeeded backtest jobs, compared in this order.
    pub job_ids: Vec<String>,
}

fn not_a_backtest(job: &JobRecord, what: &str) -> ApiError {
    ApiError::invalid(
        "not_a_backtest",
        format!(
            "job {} is a {} job; {what} reads a backtest's result (kind backtest)",
            job.id, job.kind
        ),
    )
    .with_details(json!({"job_id": job.id, "kind": job.kind}))
}

impl Service {
    /// Every closed trade of a backtest job (its `trades` rows, all pages).
    async fn all_trades(&self, job_id: &str) -> Result<Vec<Value>, ApiError> {
        const PAGE: i64 = 10_000;
        let mut trades = Vec::new();
        loop {
            let page = self
                .store()
                .result_rows(job_id, "trades", trades.len() as i64, PAGE)
                .await?;
            let last = (page.len() as i64) < PAGE;
            trades.extend(page);
            if last {
                return Ok(trades);
            }
        }
    }

    /// `GET /v1/jobs/{id}/analysis`, MCP `analyze`.
    pub async fn analyze(&self, id: &str) -> Result<Analysis, ApiError> {
        let job = self.job_record(id).await?;
        if job.kind != "backtest" {
            return Err(not_a_backtest(&job, "analysis"));
        }
        require_succeeded(&job)?;
        let body = self.stored_body(&job).await?;
        let trades = self.all_trades(&job.id).await?;
        Ok(analysis::analyze(&job.id, &body, &trades))
    }

    /// `POST /v1/compare`, MCP `compare`: 2 to 20 succeeded backtests side by
    /// side. Any unusable id is a 422 naming it.
    pub async fn compare(&self, request: CompareRequest) -> Result<Comparison, ApiError> {
        let ids: Vec<String> = request
            .job_ids
            .iter()
            .map(|id| id.trim().to_string())
            .collect();
        if !(2..=MAX_COMPARED).contains(&ids.len()) {
            return Err(ApiError::invalid(
                "invalid_job_ids",
                format!(
                    "compare takes 2 to {MAX_COMPARED} job ids; got {}",
                    ids.len()
                ),
            )
            .with_details(json!({"field": "job_ids"})));
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(ApiError::invalid(
                    "invalid_job_ids",
                    format!("job {id} is listed twice; list each job once"),
                )
                .with_details(json!({"field": "job_ids", "job_id": id})));
            }
        }
        let mut bodies = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(job) = self.store().get_job(&id).await? else {
                return Err(ApiError::invalid(
                    "unknown_job_id",
                    format!("no job with id '{id}'; ids are returned by submits and listed by GET /v1/jobs"),
                )
                .with_details(json!({"job_id": id})));
            };
            if job.kind != "backtest" {
                return Err(not_a_backtest(&job, "comparison"));
            }
            if job.status != JobStatus::Succeeded {
                return Err(ApiError::invalid(
                    "job_not_succeeded",
                    format!(
                        "job {} is {}; only succeeded backtests can be compared",
                        job.id,
                        job.status.as_str()
                    ),
                )
                .with_details(json!({"job_id": job.id, "status": job.status.as_str()})));
            }
            let body = self.stored_body(&job).await?;
            bodies.push((job.id, body));
        }
        Ok(analysis::compare(&bodies))
    }

    /// `GET /v1/jobs/{id}/charts/{name}.png`, MCP `chart`: a PNG of `width` ×
    /// `height` pixels (default 1000 × 600).
    pub async fn chart(
        &self,
        id: &str,
        name: &str,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<Vec<u8>, ApiError> {
        let size = chart_size(width, height)?;
        let job = self.job_record(id).await?;
        let applicable = Chart::applicable(&job.kind);
        let names: Vec<&str> = applicable.iter().map(|c| c.name()).collect();
        let listed = if names.is_empty() {
            format!("{} jobs have no charts", job.kind)
        } else {
            format!("{} jobs have: {}", job.kind, names.join(", "))
        };
        let chart = match Chart::parse(name) {
            None => {
                return Err(ApiError::not_found(
                    "unknown_chart",
                    format!("there is no chart named '{name}'; {listed}"),
                )
                .with_details(json!({"kind": job.kind, "names": names})));
            }
            Some(chart) if !applicable.contains(&chart) => {
                return Err(ApiError::invalid(
                    "chart_not_applicable",
                    format!("a {} job has no '{name}' chart; {listed}", job.kind),
                )
                .with_details(json!({"kind": job.kind, "names": names})));
            }
            Some(chart) => chart,
        };
        require_succeeded(&job)?;
        let body = self.stored_body(&job).await?;
        let job_id = job.id.clone();
        let kind = job.kind.clone();
        let rendered =
            tokio::task::spawn_blocking(move || draw(chart, &kind, &job_id, &body, size))
                .await
                .map_err(|e| {
                    tracing::error!(job.id = id, error = %e, "chart rendering panicked");
                    ApiError::internal()
                })?;
        rendered.map_err(|e| match e {
            ChartError::Unavailable(reason) => ApiError::invalid(
                "chart_unavailable",
                format!("job {}: no '{}' chart: {reason}", job.id, chart.name()),
            )
            .with_details(json!({"job_id": job.id, "chart": chart.name()})),
            ChartError::Render(error) => {
                tracing::error!(
                    job.id = job.id,
                    chart = chart.name(),
                    error,
                    "chart rendering failed"
                );
                ApiError::internal()
            }
        })
    }
}

/// The requested size within the bounds, or the default.
fn chart_size(width: Option<u32>, height: Option<u32>) -> Result<Size, ApiError> {
    let size = Size {
        width: width.unwrap_or(charts::DEFAULT_WIDTH),
        height: height.unwrap_or(charts::DEFAULT_HEIGHT),
    };
    if !charts::WIDTHS.contains(&size.width) || !charts::HEIGHTS.contains(&size.height) {
        return Err(ApiError::invalid(
            "invalid_chart_size",
            format!(
                "charts are {}..{} pixels wide and {}..{} high; got {}×{}",
                charts::WIDTHS.start(),
                charts::WIDTHS.end(),
                charts::HEIGHTS.start(),
                charts::HEIGHTS.end(),
                size.width,
                size.height
            ),
        )
        .with_details(json!({"width": size.width, "height": size.height})));
    }
    Ok(size)
}

enum ChartError {
    /// The result lacks what the chart shows (user-facing).
    Unavailable(String),
    /// plotters or the encoder failed (logged, never shown).
    Render(String),
}

/// What a backtest's charts say about where they come from.
fn backtest_caption(job_id: &str, body: &Value) -> String {
    let source = Source::of(job_id, body);
    let mut parts = Vec::new();
    if let Some(route) = source.routes.first() {
        let more = match source.routes.len() {
            1 => String::new(),
            n => format!(" +{} routes", n - 1),
        };
        parts.push(format!(
            "{} {} {}{more}",
            route.strategy, route.symbol, route.timeframe
        ));
    }
    if let (Some(start), Some(end)) = (&source.start_date, &source.end_date) {
        parts.push(format!("{start} → {end}"));
    }
    parts.push(format!("job {job_id}"));
    parts.join(" · ")
}

fn curve_of(body: &Value) -> Result<Vec<EquityPoint>, ChartError> {
    portfolio_curve(&body["equity_curve"]).ok_or_else(|| {
        ChartError::Unavailable(
            "the backtest has no daily equity curve (Jesse keeps none when it closed no trades)"
                .into(),
        )
    })
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

/// Renders `chart` of a job's stored result body.
fn draw(
    chart: Chart,
    kind: &str,
    job_id: &str,
    body: &Value,
    size: Size,
) -> Result<Vec<u8>, ChartError> {
    let png = match (kind, chart) {
        ("monte_carlo", Chart::Fan) => {
            let fan = charts::parse_fan(body).map_err(ChartError::Unavailable)?;
            let scenarios = body["setup"]["scenarios"]
                .as_u64()
                .map(|n| format!(" · {n} scenarios"))
                .unwrap_or_default();
            let title = format!("Monte Carlo equity percentiles{scenarios} · job {job_id}");
            charts::fan(&fan, &title, size)
        }
        ("monte_carlo", Chart::Histogram) => {
            let totals = numbers(&body["distribution"]["total_return"]);
            if totals.is_empty() {
                return Err(ChartError::Unavailable(
                    "the result lists no scenario's total return".into(),
                ));
            }
            let mut sorted = totals.clone();
            sorted.sort_by(f64::total_cmp);
            let mut markers = Vec::new();
            if let Some(original) = body["metrics"]["total_return"]["original"].as_f64() {
                markers.push(Marker::new("Original backtest", original, charts::DARK));
            }
            for (label, q, color) in [
                ("5th percentile", 0.05, charts::GREY),
                ("Median", 0.5, charts::ORANGE),
                ("95th percentile", 0.95, charts::GREY),
            ] {
                if let Some(v) = quantile(&sorted, q) {
                    markers.push(Marker::new(label, v, color));
                }
            }
            let title = format!("Total return of {} scenarios · job {job_id}", totals.len());
            charts::histogram(
                &totals,
                &title,
                "Total return of a scenario (%)",
                "Scenarios",
                &markers,
                size,
            )
        }
        (_, Chart::Equity) => {
            let curve = curve_of(body)?;
            let currency = Source::of(job_id, body)
                .quote_currency()
                .unwrap_or("quote currency")
                .to_string();
            let title = format!("Equity and drawdown · {}", backtest_caption(job_id, body));
            charts::equity(&curve, &title, &currency, size)
        }
        (_, Chart::Drawdown) => {
            let curve = curve_of(body)?;
            let mut worst = drawdown_periods(&curve);
            worst.truncate(TOP_DRAWDOWNS);
            let title = format!("Drawdown · {}", backtest_caption(job_id, body));
            charts::drawdown(&curve, &worst, &title, size)
        }
        (_, Chart::Monthly) => {
            let returns = daily_returns(&curve_of(body)?);
            let title = format!("Monthly returns (%) · {}", backtest_caption(job_id, body));
            charts::monthly(
                &monthly_returns(&returns),
                &yearly_returns(&returns),
                &title,
                size,
            )
        }
        (_, Chart::Histogram) => {
            let returns: Vec<f64> = daily_returns(&curve_of(body)?)
                .iter()
                .map(|r| r.value)
                .collect();
            if returns.len() < 2 {
                return Err(ChartError::Unavailable(format!(
                    "{} daily returns; at least 2 are needed",
                    returns.len()
                )));
            }
            let d = return_distribution(&returns);
            let mut markers = Vec::new();
            for (label, value, color) in [
                ("Mean", d.mean_pct, charts::ORANGE),
                ("VaR 95 %", d.var_95_pct, charts::RED_LINE),
                ("CVaR 95 %", d.cvar_95_pct, charts::DARK),
            ] {
                if let Some(v) = value {
                    markers.push(Marker::new(label, v, color));
                }
            }
            let pct: Vec<f64> = returns.iter().map(|r| r * 100.0).collect();
            let title = format!("Daily returns · {}", backtest_caption(job_id, body));
            charts::histogram(&pct, &title, "Daily return (%)", "Days", &markers, size)
        }
        (_, Chart::Fan) => {
            return Err(ChartError::Unavailable(
                "fan charts are drawn for monte_carlo jobs".into(),
            ));
        }
    };
    png.map_err(ChartError::Render)
}
