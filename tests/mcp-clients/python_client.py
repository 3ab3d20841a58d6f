"""The Python MCP SDK (`mcp`, pinned in ops/tools-requirements.lock) against the service,
over streamable HTTP or stdio: connect (the SDK negotiates the protocol revision), list
every tool, resource and prompt, call tools and validate every structured result against
the tool's outputSchema with jsonschema (Draft 2020-12, formats checked), run a backtest
to completion, and check that argument errors come back as tool errors in the envelope.
Exits non-zero on any failure. Run by tests/tests/mcp_clients.rs with the tools venv.

    JESSE_MCP_CLIENT_CONFIG  JSON: {transport: "http"|"stdio", url?, command?, args?, env?, backtest}
"""

import asyncio
import json
import os
import sys
import time
from importlib.metadata import version

import jsonschema
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

CONFIG = json.loads(os.environ["JESSE_MCP_CLIENT_CONFIG"])
UNKNOWN_JOB = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def log(*args):
    print(f"[python-sdk {version('mcp')} {CONFIG['transport']}]", *args, flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(f"check failed: {message}")


async def all_pages(fetch, key):
    items, cursor = [], None
    while True:
        page = await fetch(cursor=cursor)
        items.extend(getattr(page, key))
        cursor = page.next_cursor
        if not cursor:
            return items


async def main():
    if CONFIG["transport"] == "http":
        server = CONFIG["url"]
    else:
        server = StdioServerParameters(
            command=CONFIG["command"], args=CONFIG.get("args", []), env={**os.environ, **CONFIG.get("env", {})}
        )
    async with Client(server, client_info=None, read_timeout_seconds=90) as client:
        log("connected, protocol", client.protocol_version)

        tools = await all_pages(client.list_tools, "tools")
        log(f"{len(tools)} tools")
        check(len(tools) > 20, f"only {len(tools)} tools")
        validators = {}
        for tool in tools:
            for kind, schema in (("inputSchema", tool.input_schema), ("outputSchema", tool.output_schema)):
                if schema is None:
                    continue
                check(schema.get("type") == "object", f"{tool.name}.{kind}: root type {schema.get('type')}")
                # The schema itself must be a valid 2020-12 schema.
                jsonschema.Draft202012Validator.check_schema(schema)
            if tool.output_schema is not None:
                validators[tool.name] = jsonschema.Draft202012Validator(
                    tool.output_schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                )
        names = {t.name for t in tools}
        for name in ("backtest", "job_wait", "job_get", "job_result", "job_list", "strategy_list"):
            check(name in names, f"tool {name} listed")

        resources = await all_pages(client.list_resources, "resources")
        log(f"{len(resources)} resources")
        check(any(str(r.uri) == "jesse://strategies/SmaCross" for r in resources), "SmaCross is a resource")
        read = await client.read_resource("jesse://strategies/SmaCross")
        check("class SmaCross" in read.contents[0].text, "the resource is the strategy source")

        if client.server_capabilities.prompts is not None:
            prompts = await all_pages(client.list_prompts, "prompts")
            log(f"{len(prompts)} prompts")
        else:
            try:
                prompts = await client.list_prompts()
                log(f"{len(prompts.prompts)} prompts")
            except MCPError as e:
                log(f"prompts not offered (prompts/list: {e.error.code})")

        validated = 0

        async def call(name, arguments, **kwargs):
            nonlocal validated
            result = await client.call_tool(name, arguments, **kwargs)
            if not result.is_error and name in validators:
                check(result.structured_content is not None, f"{name} has an outputSchema but no structuredContent")
                errors = sorted(validators[name].iter_errors(result.structured_content), key=str)
                check(not errors, f"{name}: structuredContent does not match its outputSchema: {errors[:3]}")
                validated += 1
            return result

        def envelope(result):
            check(result.is_error, f"a tool error: {result}")
            body = json.loads(result.content[0].text)
            error = body.get("error", {})
            check(isinstance(error.get("code"), str) and isinstance(error.get("message"), str), f"envelope: {body}")
            return error

        for name in ("candles_available", "strategy_list", "schedule_list", "job_list"):
            result = await call(name, {})
            check(not result.is_error, f"{name}: {result.content}")
        strategy = await call("strategy_read", {"name": "SmaCross"})
        check(strategy.structured_content["name"] == "SmaCross", "strategy_read")

        error = envelope(await call("job_get", {}))
        check(error["code"] == "invalid_arguments" and "job_id" in error["message"], f"missing field: {error}")
        error = envelope(await call("job_result", {"job_id": UNKNOWN_JOB, "limit": "ten"}))
        check(error["code"] == "invalid_arguments", f"wrong type: {error}")
        error = envelope(await call("strategy_list", {"verbose": True}))
        check(error["code"] == "invalid_arguments" and "verbose" in error["message"], f"unknown field: {error}")
        error = envelope(await call("job_result", {"job_id": UNKNOWN_JOB}))
        check(error["code"] == "job_not_found" and "/v1/" not in error["message"], f"MCP wording: {error}")
        error = envelope(await call("job_wait", {"job_id": UNKNOWN_JOB, "timeout_seconds": 0}))
        check(error["code"] == "invalid_timeout", f"timeout out of range: {error}")

        submitted = await call("backtest", CONFIG["backtest"])
        check(not submitted.is_error, f"backtest: {submitted.content}")
        job_id = submitted.structured_content["job_id"]
        log("submitted", job_id)
        progress = []

        async def on_progress(value, total, message):
            progress.append((value, total, message))

        deadline = time.monotonic() + 240
        while True:
            check(time.monotonic() < deadline, f"job {job_id} did not finish")
            waited = await call("job_wait", {"job_id": job_id, "timeout_seconds": 20}, progress_callback=on_progress)
            check(not waited.is_error, f"job_wait: {waited.content}")
            job = waited.structured_content
            if job["status"] not in ("queued", "running"):
                break
        check(job["status"] == "succeeded", f"job {job_id} ended {job['status']}: {job.get('error')}")
        log(f"succeeded; {len(progress)} progress notifications")
        check(progress and progress[-1][0] == 1.0 and progress[-1][1] == 1.0, f"last progress is 1.0: {progress}")
        got = await call("job_get", {"job_id": job_id})
        check(got.structured_content["status"] == "succeeded", "job_get")
        result = await call("job_result", {"job_id": job_id, "include_trades": True, "trades_limit": 5})
        check(not result.is_error, f"job_result: {result.content}")
        check(isinstance(result.structured_content["metrics"], dict), "metrics")
        analysis = await call("analyze", {"job_id": job_id})
        check(not analysis.is_error, f"analyze: {analysis.content}")
        listed = await call("job_list", {"limit": 5})
        check(any(j["job_id"] == job_id for j in listed.structured_content["jobs"]), "job_list shows the job")

        log(f"ok: {len(tools)} tools, {len(resources)} resources, {validated} structured results validated")


try:
    asyncio.run(main())
except BaseException as e:  # noqa: BLE001 - any failure is the test's failure, with its reason
    import traceback

    traceback.print_exception(e)
    sys.exit(1)
