//! `jesse-mcp-api`: serves REST + MCP over HTTP (`serve`, the default), MCP over
//! stdio (`mcp-stdio`), schema setup (`migrate`), and offline candle tools
//! (`candles import-csv|synth|demo`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jesse_mcp_api::{ApiConfig, Application, app::open_service};
use jesse_mcp_core::candles::CandleSource;
use rmcp::ServiceExt;

#[derive(Parser)]
#[command(
    name = "jesse-mcp-api",
    version,
    about = "REST and MCP frontends of jesse-mcp"
)]
struct Cli {
    #[command(flatten)]
    config: ApiConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve REST (/v1) and MCP (/mcp) over HTTP (the default).
    Serve,
    /// Serve MCP over stdin/stdout for an MCP client that launches this process.
    McpStdio,
    /// Create or upgrade the store's schema and the queue, then exit (a deploy step;
    /// `serve` and the worker also migrate on start).
    Migrate,
    /// Candle data tools that work without a running service.
    Candles {
        #[command(subcommand)]
        command: CandlesCommand,
    },
}

#[derive(Subcommand)]
enum CandlesCommand {
    /// Import 1m candles from a CSV file (header timestamp,open,high,low,close,volume).
    ImportCsv {
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        symbol: String,
        file: PathBuf,
    },
    /// Store the demo series if the store holds no candles: a year (2023) of
    /// synthetic 1m candles for Binance Perpetual Futures BTC-USDT, labelled
    /// `synthetic` (not market prices) in listings, gap reports and results.
    /// `make run` and ops/mcp-stdio.sh run it on start; it writes only to stderr.
    Demo,
    /// Generate reproducible synthetic 1m candles for demos and tests, into the
    /// store (labelled `synthetic`) or a CSV file.
    Synth {
        #[arg(long, default_value = "Binance Perpetual Futures")]
        exchange: String,
        #[arg(long, default_value = "BTC-USDT")]
        symbol: String,
        /// First day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        start: String,
        /// Last day (YYYY-MM-DD), exclusive.
        #[arg(long)]
        end: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 40000.0)]
        price: f64,
        /// Write CSV here instead of importing into the store.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Do nothing if the store already holds any candles (for first-run demo data).
        #[arg(long)]
        if_empty: bool,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,rmcp=warn,tower_http=warn")
    });
    // stderr always: stdout belongs to the MCP protocol in stdio mode.
    // Colours only for a person at a terminal, never into files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::McpStdio => {
            let service = open_service(&cli.config).await?;
            let running = jesse_mcp_api::mcp::JesseMcp::new(service)
                .serve(rmcp::transport::stdio())
                .await
                .context("starting MCP over stdio")?;
            running.waiting().await?;
            Ok(())
        }
        Command::Candles { command } => candles(cli.config, command).await,
        Command::Migrate => {
            let (store, queue) = cli
                .config
                .backends
                .open()
                .await
                .context("migrating the store and setting up the queue")?;
            tracing::info!(
                store = store.engine(),
                queue = queue.engine(),
                "store and queue are ready"
            );
            Ok(())
        }
    }
}

async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let app = Application::build(&config).await?;
    let addr = app.local_addr();
    // Tests and scripts read this line to find the port when binding to :0.
    println!("jesse-mcp-api listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.backends.data_dir.display(), strategies = %config.strategies_dir.display(), "serving REST at /v1 and MCP at /mcp");
    app.run_until_stopped(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
    })
    .await
}

async fn candles(config: ApiConfig, command: CandlesCommand) -> anyhow::Result<()> {
    match command {
        CandlesCommand::ImportCsv {
            exchange,
            symbol,
            file,
        } => {
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let service = open_service(&config).await?;
            let report = service
                .import_csv(&exchange, &symbol, &body)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        CandlesCommand::Demo => {
            use jesse_mcp_core::candles::demo;
            let service = open_service(&config).await?;
            let store = service.store();
            if demo::settle_unknown(store).await? {
                eprintln!(
                    "jesse-mcp: labelled the stored {} {} series as synthetic demo data (it was stored before \
                     sources were recorded)",
                    demo::EXCHANGE,
                    demo::SYMBOL
                );
            }
            if !store.list_series().await?.is_empty() {
                return Ok(());
            }
            let candles = demo::candles();
            store
                .upsert_candles(
                    demo::EXCHANGE,
                    demo::SYMBOL,
                    CandleSource::Synthetic,
                    &candles,
                )
                .await?;
            store
                .refresh_gap_count(demo::EXCHANGE, demo::SYMBOL)
                .await?;
            eprintln!(
                "jesse-mcp: stored DEMO DATA: {} synthetic 1m candles (not market prices) as {} {}, 2023; \
                 listings and results say source \"synthetic\"; an exchange import or CSV upload for that \
                 exchange and symbol replaces them",
                candles.len(),
                demo::EXCHANGE,
                demo::SYMBOL
            );
            Ok(())
        }
        CandlesCommand::Synth {
            exchange,
            symbol,
            start,
            end,
            seed,
            price,
            csv,
            if_empty,
        } => {
            let start_ms = jesse_mcp_core::time::parse_day(&start).map_err(anyhow::Error::msg)?;
            let end_ms = jesse_mcp_core::time::parse_day(&end).map_err(anyhow::Error::msg)?;
            if start_ms >= end_ms {
                bail!("--start must be before --end (end is exclusive)");
            }
            let candles = jesse_mcp_core::candles::synthetic(start_ms, end_ms, price, seed);
            if let Some(path) = csv {
                let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
                jesse_mcp_core::candles::write_csv(&candles, &mut out)?;
                eprintln!("wrote {} candles to {}", candles.len(), path.display());
                return Ok(());
            }
            if !jesse_mcp_core::jesse::is_backtesting_exchange(&exchange) {
                bail!("exchange '{exchange}' is not one Jesse can backtest");
            }
            jesse_mcp_core::planner::check_symbol(&symbol).map_err(|e| anyhow::anyhow!("{e}"))?;
            let service = open_service(&config).await?;
            let store = service.store();
            if if_empty && !store.list_series().await?.is_empty() {
                return Ok(());
            }
            if let Some(source) = store
                .series_source(&exchange, &symbol)
                .await?
                .filter(|s| s != CandleSource::Synthetic.as_str())
            {
                bail!(
                    "{exchange} {symbol} holds {source} candles; synthetic candles never share a series with \
                     others: use another symbol, or delete the series first"
                );
            }
            let counts = store
                .upsert_candles(&exchange, &symbol, CandleSource::Synthetic, &candles)
                .await?;
            store.refresh_gap_count(&exchange, &symbol).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "exchange": exchange,
                    "symbol": symbol,
                    "source": "synthetic",
                    "rows": candles.len(),
                    "inserted": counts.inserted,
                    "updated": counts.updated,
                    "unchanged": counts.unchanged,
                }))?
            );
            Ok(())
        }
    }
}
