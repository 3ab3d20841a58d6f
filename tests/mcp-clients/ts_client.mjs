// The official TypeScript MCP SDK (@modelcontextprotocol/sdk, pinned in package-lock.json)
// against the service, over streamable HTTP or stdio: initialize, list every tool,
// resource and prompt, call tools (the SDK validates every structuredContent against
// the tool's outputSchema and refuses a tools/list it cannot parse), run a backtest to
// completion, and check that argument errors come back as tool errors in the envelope.
// Exits non-zero on any failure. Run by tests/tests/mcp_clients.rs.
//
//   JESSE_MCP_NODE_MODULES  node_modules of tests/mcp-clients (ops/mcp-clients-env.sh)
//   JESSE_MCP_CLIENT_CONFIG JSON: {transport: "http"|"stdio", url?, command?, args?, env?, backtest}
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const modules = process.env.JESSE_MCP_NODE_MODULES;
if (!modules) throw new Error('JESSE_MCP_NODE_MODULES is not set: run ops/mcp-clients-env.sh and pass the directory it prints');
const config = JSON.parse(process.env.JESSE_MCP_CLIENT_CONFIG ?? 'null');
if (!config) throw new Error('JESSE_MCP_CLIENT_CONFIG is not set');

const require = createRequire(join(modules, 'noop.js'));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const sdkVersion = JSON.parse(readFileSync(join(modules, '@modelcontextprotocol/sdk/package.json'), 'utf8')).version;

const log = (...args) => console.log(`[ts-sdk ${sdkVersion} ${config.transport}]`, ...args);
function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const transport = config.transport === 'http'
  ? new StreamableHTTPClientTransport(new URL(config.url))
  : new StdioClientTransport({
      command: config.command,
      args: config.args ?? [],
      env: { ...process.env, ...(config.env ?? {}) },
      stderr: 'inherit',
    });
const client = new Client({ name: 'jesse-mcp-ts-sdk-test', version: '0' });
// The SDK handles a notification a microtask after a response read in the same chunk,
// and reports progress for an answered request here instead of to onprogress: such a
// notification still arrived, so it counts (the server spaces its last one out).
const late = [];
client.onerror = (error) => {
  const match = /unknown token: (.*)$/s.exec(error.message);
  if (match) late.push(JSON.parse(match[1]).params);
  else log('client error:', error.message);
};
await client.connect(transport);
const server = client.getServerVersion();
const capabilities = client.getServerCapabilities() ?? {};
log('connected to', server?.name, server?.version, 'protocol', transport.protocolVersion ?? '(stdio)');
check(server?.name === 'jesse-mcp', `server name ${server?.name}`);

// Every page of every list. The SDK parses each answer with its zod schemas: a bare
// boolean where it expects a schema object fails the whole tools/list here.
async function all(method, key) {
  const items = [];
  let cursor;
  do {
    const page = await client[method](cursor ? { cursor } : {});
    items.push(...page[key]);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}
const tools = await all('listTools', 'tools');
log(`${tools.length} tools`);
check(tools.length > 20, `only ${tools.length} tools`);
for (const tool of tools) {
  check(tool.inputSchema?.type === 'object', `${tool.name}: inputSchema type`);
  if (tool.outputSchema) check(tool.outputSchema.type === 'object', `${tool.name}: outputSchema type`);
}
const byName = new Map(tools.map((t) => [t.name, t]));
for (const name of ['backtest', 'job_wait', 'job_get', 'job_result', 'job_list', 'strategy_list', 'candles_available']) {
  check(byName.has(name), `tool ${name} listed`);
}

const resources = await all('listResources', 'resources');
log(`${resources.length} resources`);
check(resources.some((r) => r.uri === 'jesse://strategies/SmaCross'), 'the SmaCross strategy is a resource');
const read = await client.readResource({ uri: 'jesse://strategies/SmaCross' });
check(read.contents[0].text.includes('class SmaCross'), 'the resource is the strategy source');

if (capabilities.prompts) {
  const prompts = await all('listPrompts', 'prompts');
  log(`${prompts.length} prompts`);
} else {
  // Not offered: a client must not need them. Asking anyway is a clean JSON-RPC error.
  const error = await client.listPrompts().then(() => null, (e) => e);
  log('prompts not offered', error ? `(prompts/list: ${error.code})` : '(prompts/list answered)');
}

// Every call goes through callTool, which validates structuredContent against the
// tool's outputSchema (and fails if a tool with one returns none).
let structured = 0;
async function call(name, args, options) {
  const result = await client.callTool({ name, arguments: args }, undefined, options);
  if (result.structuredContent) structured += 1;
  return result;
}
function envelope(result) {
  check(result.isError === true, `a tool error: ${JSON.stringify(result)}`);
  const body = JSON.parse(result.content[0].text);
  check(typeof body.error?.code === 'string' && typeof body.error?.message === 'string',
    `the error envelope: ${result.content[0].text}`);
  return body.error;
}

for (const name of ['candles_available', 'strategy_list', 'schedule_list', 'job_list']) {
  const result = await call(name, {});
  check(!result.isError, `${name}: ${JSON.stringify(result.content)}`);
}
const strategy = await call('strategy_read', { name: 'SmaCross' });
check(strategy.structuredContent?.name === 'SmaCross', 'strategy_read');

// Argument errors: tool errors in the same envelope as every other error.
let error = envelope(await call('job_get', {}));
check(error.code === 'invalid_arguments' && error.message.includes('job_id'), `missing field: ${JSON.stringify(error)}`);
error = envelope(await call('job_get', { job_id: 42 }));
check(error.code === 'invalid_arguments', `wrong type: ${JSON.stringify(error)}`);
error = envelope(await call('job_get', { job_id: '01JAAAAAAAAAAAAAAAAAAAAAAA', extra: 1 }));
check(error.code === 'invalid_arguments' && error.message.includes('extra'), `unknown field: ${JSON.stringify(error)}`);
error = envelope(await call('job_get', { job_id: '01JAAAAAAAAAAAAAAAAAAAAAAA' }));
check(error.code === 'job_not_found' && !error.message.includes('/v1/'), `MCP wording: ${error.message}`);
error = envelope(await call('backtest', { ...config.backtest, nonsense: true }));
check(error.code !== undefined, `submit with an unknown field: ${JSON.stringify(error)}`);
error = envelope(await call('job_wait', { job_id: '01JAAAAAAAAAAAAAAAAAAAAAAA', timeout_seconds: 51 }));
check(error.code === 'invalid_timeout', `timeout out of range: ${JSON.stringify(error)}`);

// A backtest to completion: submit, job_wait (with progress), job_get, job_result.
const submitted = await call('backtest', config.backtest);
check(!submitted.isError, `backtest: ${JSON.stringify(submitted.content)}`);
const jobId = submitted.structuredContent.job_id;
check(typeof jobId === 'string', 'a job id');
log('submitted', jobId);
const progress = [];
let job;
const deadline = Date.now() + 240_000;
do {
  check(Date.now() < deadline, `job ${jobId} did not finish: ${JSON.stringify(job)}`);
  const waited = await call('job_wait', { job_id: jobId, timeout_seconds: 20 }, {
    onprogress: (p) => progress.push(p),
    timeout: 60_000,
  });
  check(!waited.isError, `job_wait: ${JSON.stringify(waited.content)}`);
  job = waited.structuredContent;
} while (job.status === 'queued' || job.status === 'running');
check(job.status === 'succeeded', `job ${jobId} ended ${job.status}: ${JSON.stringify(job.error)}`);
progress.push(...late);
log(`succeeded; ${progress.length} progress notifications (${late.length} after the answer)`);
check(progress.length >= 1 && progress.at(-1).progress === 1 && progress.at(-1).total === 1,
  `the last progress notification is 1.0: ${JSON.stringify(progress)}`);
const got = await call('job_get', { job_id: jobId });
check(got.structuredContent.status === 'succeeded', 'job_get');
const result = await call('job_result', { job_id: jobId, include_trades: true, trades_limit: 5 });
check(!result.isError, `job_result: ${JSON.stringify(result.content)}`);
check(typeof result.structuredContent.metrics === 'object', 'metrics');
check(Array.isArray(result.structuredContent.trades), 'trades');
const analysis = await call('analyze', { job_id: jobId });
check(!analysis.isError, `analyze: ${JSON.stringify(analysis.content)}`);
const listed = await call('job_list', { limit: 5 });
check(listed.structuredContent.jobs.some((j) => j.job_id === jobId), 'job_list shows the job');

log(`ok: ${tools.length} tools, ${resources.length} resources, ${structured} structured results validated against their outputSchema`);
await client.close();
