//! The research side of MCP beyond tools: prompts that teach the research
//! loop (submit and poll, overfitting checks), pipeline reports as resources
//! (`jesse://reports/<job_id>`) and the template catalog
//! (`jesse://pipelines/templates`).

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptResult, Prompt, PromptArgument, PromptMessage, Resource, ResourceTemplate, Role,
};
use serde_json::{Map, Value};

pub const REPORT_URI: &str = "jesse://reports/";
pub const TEMPLATES_URI: &str = "jesse://pipelines/templates";

/// Arguments a prompt takes: (name, description, required).
type Args = &'static [(&'static str, &'static str, bool)];

struct ResearchPrompt {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// The required argument naming what to study; the market arguments follow.
    lead: (&'static str, &'static str),
    text: fn(&Map<String, Value>) -> String,
}

impl ResearchPrompt {
    fn args(&self) -> impl Iterator<Item = (&'static str, &'static str, bool)> {
        std::iter::once((self.lead.0, self.lead.1, true)).chain(MARKET_ARGS.iter().copied())
    }
}

const MARKET_ARGS: Args = &[
    (
        "exchange",
        "Exchange as Jesse spells it (default Binance Perpetual Futures)",
        false,
    ),
    ("symbol", "Symbol, e.g. BTC-USDT", false),
    ("timeframe", "Timeframe, e.g. 1h", false),
    ("start_date", "First day, YYYY-MM-DD", false),
    ("end_date", "Last day (exclusive), YYYY-MM-DD", false),
];

static PROMPTS: &[ResearchPrompt] = &[
    ResearchPrompt {
        name: "evaluate_strategy",
        title: "Evaluate a strategy",
        description: "Run the whole evaluation as one research pipeline (validate, baseline, optimize, walk-forward, \
Monte Carlo) and read its verdict and report, with the overfitting checks spelled out.",
        lead: ("strategy", "The strategy's name (strategy_list shows them)"),
        text: evaluate,
    },
    ResearchPrompt {
        name: "improve_strategy",
        title: "Improve a strategy without overfitting",
        description: "Change a strategy step by step with a held-out period, a budget of variants, and deflated \
statistics, so an improvement is real and not the best of many tries.",
        lead: ("strategy", "The strategy's name (strategy_list shows them)"),
        text: improve,
    },
    ResearchPrompt {
        name: "compare_strategies",
        title: "Compare strategies",
        description: "Compare several strategies on the same candles, side by side, with significance tests and a \
correction for having picked the best of several.",
        lead: ("strategies", "Comma-separated strategy names"),
        text: compare,
    },
];

const DISCIPLINE: &str = "How to work with this service:\n\
- Every submit (research_pipeline, backtest, optimize, walk_forward, monte_carlo, ...) answers at once with a job_id. \
Then call job_wait with that id (it returns when the job ends or after its timeout, with progress on the way); call \
it again until the status is succeeded, failed or cancelled. Never resubmit a job because it is still running.\n\
- Read results with job_result; for parents (pipelines, studies) job_children lists their child jobs. A failed job's \
error says what was wrong and how to fix it: fix that, do not retry blindly.\n\
- Quote numbers with the job id that produced them. Results say where their candles came from (provenance): \
synthetic demo candles are not market data, never present them as such.\n";

const OVERFITTING: &str = "Overfitting checks (do not skip them):\n\
- An optimization's best trial is the best of many: read its `overfitting` section. PBO (probability of backtest \
overfitting) above 0.5 means the in-sample winner is more likely than not to be below median out of sample; the \
deflated Sharpe ratio corrects the best Sharpe for the number of trials. Report both, with their job id.\n\
- Out of sample is what counts: walk-forward efficiency (Pardo's: linear annual rate of profit out of sample ÷ in \
sample) well below 0.5 means the edge does not survive new data.\n\
- Monte Carlo on the trades (a stationary bootstrap of their returns, the default) shows how much of the result is \
luck in which trades came: quote the 5th percentile of total return and the probability of a loss, not the original \
backtest alone (under shuffle the total cannot change, so that probability is null). Its drawdowns are closed-trade \
ones; Jesse's mark-to-market drawdown of the backtest is shown beside them.\n\
- Every variant you try counts. Keep a tally of the configurations you tested, and say it when you report.\n";

fn arg<'a>(args: &'a Map<String, Value>, name: &str, default: &'a str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or(default)
}

fn market(args: &Map<String, Value>) -> String {
    format!(
        "exchange \"{}\", symbol \"{}\", timeframe \"{}\", from {} to {}",
        arg(args, "exchange", "Binance Perpetual Futures"),
        arg(args, "symbol", "BTC-USDT"),
        arg(args, "timeframe", "1h"),
        arg(args, "start_date", "<start_date>"),
        arg(args, "end_date", "<end_date>"),
    )
}

fn evaluate(args: &Map<String, Value>) -> String {
    let strategy = arg(args, "strategy", "<strategy>");
    format!(
        "Evaluate the Jesse strategy \"{strategy}\" on {}.\n\n\
1. Check the candles with candles_available (and candles_gaps for the range). Note their source: synthetic demo \
candles are not market data.\n\
2. Submit research_pipeline with {{\"template\": \"evaluate_strategy\", \"params\": {{\"strategy\": \"{strategy}\", \
\"exchange\": ..., \"symbol\": ..., \"timeframe\": ..., \"start_date\": ..., \"end_date\": ..., \"trials\": 40, \
\"seed\": <any integer, so it can be re-run exactly>}}}}. The resource {TEMPLATES_URI} documents every parameter \
(gate thresholds max_pbo, min_efficiency, max_loss_probability; the search space; backtest config).\n\
3. job_wait on its job_id until it ends (a pipeline takes minutes: keep calling job_wait). job_children shows the \
steps as they run.\n\
4. Read the verdict with job_result and the report at {REPORT_URI}<job_id>. A rejected verdict names the gate that \
failed, its value and the job that produced it; report that plainly, do not look for parameters that pass.\n\n\
{DISCIPLINE}\n{OVERFITTING}",
        market(args)
    )
}

fn improve(args: &Map<String, Value>) -> String {
    let strategy = arg(args, "strategy", "<strategy>");
    format!(
        "Improve the Jesse strategy \"{strategy}\" on {} without fooling yourself.\n\n\
1. Split the range first: keep the last 20–30 % as a final hold-out you do not look at until the end. Work only on \
the earlier part.\n\
2. Baseline: run research_pipeline with the evaluate_strategy template on the working range (fixed seed). Note its \
verdict, PBO, walk-forward efficiency and Monte Carlo 5th percentile, with job ids.\n\
3. Change one thing at a time, for a reason you can state (a rule, a filter, a risk setting), with strategy_read and \
strategy_write (then strategy_validate with deep: true). Do not tune by trying many values by hand: that is an \
optimization without its statistics. Let optimize search the declared hyperparameters instead.\n\
4. Re-run the pipeline after each change, with the same seed. Keep a tally of variants tried; decide in advance how \
many you allow (e.g. 5).\n\
5. Accept a change only if walk-forward efficiency and the out-of-sample numbers improve, PBO stays low, and the \
deflated Sharpe ratio stays positive, not just the in-sample Sharpe.\n\
6. Finally run one backtest of the chosen version on the hold-out, once, and report it beside the working-range \
numbers with the number of variants tried. If it fails there, say so.\n\n\
{DISCIPLINE}\n{OVERFITTING}",
        market(args)
    )
}

fn compare(args: &Map<String, Value>) -> String {
    let strategies = arg(args, "strategies", "<A>, <B>");
    format!(
        "Compare the Jesse strategies {strategies} on {}.\n\n\
1. Run each on exactly the same candles and settings: one backtest per strategy (or backtest_batch), same range, \
fee, balance and leverage. job_wait on each.\n\
2. Put them side by side with compare (metrics table, equity curves on one calendar, correlation of daily returns).\n\
3. For each, run significance_test (is its return distinguishable from chance?) and monte_carlo in trades mode on \
its backtest (5th percentile of total return, probability of a loss).\n\
4. Picking the best of several is itself a selection: discount the winner's Sharpe for the number of strategies \
compared (the deflated Sharpe ratio idea), and prefer the one whose out-of-sample evidence (walk_forward, or the \
evaluate_strategy pipeline) holds up, not the highest in-sample number.\n\
5. Report a table with every number's job id, and say which differences are within noise.\n\n\
{DISCIPLINE}\n{OVERFITTING}",
        market(args)
    )
}

pub fn prompts() -> Vec<Prompt> {
    PROMPTS
        .iter()
        .map(|p| {
            let args = p
                .args()
                .map(|(name, description, required)| {
                    PromptArgument::new(name)
                        .with_description(description)
                        .with_required(required)
                })
                .collect();
            Prompt::new(p.name, Some(p.description), Some(args)).with_title(p.title)
        })
        .collect()
}

pub fn prompt(
    name: &str,
    arguments: Option<&Map<String, Value>>,
) -> Result<GetPromptResult, ErrorData> {
    let Some(found) = PROMPTS.iter().find(|p| p.name == name) else {
        let names: Vec<&str> = PROMPTS.iter().map(|p| p.name).collect();
        return Err(ErrorData::invalid_params(
            format!(
                "unknown prompt '{name}'; the prompts are {}",
                names.join(", ")
            ),
            None,
        ));
    };
    let empty = Map::new();
    let args = arguments.unwrap_or(&empty);
    for (arg_name, _, required) in found.args() {
        let given = args.get(arg_name);
        if required
            && given
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(ErrorData::invalid_params(
                format!("prompt '{name}' needs the argument '{arg_name}'"),
                None,
            ));
        }
        if given.and_then(Value::as_str).is_some_and(|s| s.len() > 200) {
            return Err(ErrorData::invalid_params(
                format!("argument '{arg_name}' is longer than 200 characters"),
                None,
            ));
        }
    }
    if let Some(unknown) = args
        .keys()
        .find(|k| !found.args().any(|(n, _, _)| n == k.as_str()))
    {
        return Err(ErrorData::invalid_params(
            format!("prompt '{name}' takes no argument '{unknown}'"),
            None,
        ));
    }
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(
        Role::User,
        (found.text)(args),
    )])
    .with_description(found.description))
}

/// The fixed research resources (listed beside the strategies).
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(TEMPLATES_URI, "pipeline-templates")
            .with_mime_type("application/json")
            .with_description(
                "The built-in research pipeline templates: what each runs, its params' JSON Schema and an example",
            ),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{REPORT_URI}{{job_id}}"), "pipeline-report")
            .with_title("Research pipeline report")
            .with_description("The Markdown report of a finished research_pipeline job: verdict, steps, gates, tables, each number with its job id")
            .with_mime_type("text/markdown"),
    ]
}
