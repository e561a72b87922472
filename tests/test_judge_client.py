"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 with injected faults."""

import asyncio
import email.utils
import time

import pytest
from fake_openai import FakeOpenAI, Reply, user_text

from interleave_bench.judges.client import (
    JudgeConfig,
    JudgeUnavailable,
    OpenAIJudge,
)
from interleave_bench.judges.request import JudgeRequest, Part
from interleave_bench.judges.transport import retry_after_seconds

REQ = JudgeRequest((Part.of_text("Rate this."),), max_tokens=16)
TRANSPORT = {"kind": "sdk"}


@pytest.fixture(autouse=True, params=["sdk", "aiohttp"])
def transport(request):
    """Every behaviour below holds for both transports."""
    TRANSPORT["kind"] = request.param
    yield request.param
    TRANSPORT["kind"] = "sdk"


def judge(server, **kw):
    cfg = dict(
        transport=TRANSPORT["kind"],
        model="judge",
        base_url=server.url,
        backoff_base=0.01,
        backoff_max=0.05,
        max_retries=4,
        timeout=5.0,
    )
    cfg.update(kw)
    return OpenAIJudge(JudgeConfig(**cfg))


def run(coro):
    return asyncio.run(coro)


def scripted(*replies):
    queue = list(replies)

    def script(body):
        return queue.pop(0) if queue else Reply()

    return script


def test_ok_reply_usage_cost_and_sampling(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-0123456789")
    with FakeOpenAI() as server:
        j = judge(server, model="gpt-4o")
        r = run(j.complete(REQ))
    assert r.status == "ok" and r.text.endswith("4") and r.attempts == 1
    assert r.usage == {"prompt_tokens": 100, "completion_tokens": 20}
    assert r.cost == pytest.approx((100 * 2.5 + 20 * 10) / 1e6)
    body = server.requests[0]
    assert body["temperature"] == 0 and body["seed"] == 0 and body["max_tokens"] == 16
    assert server.headers[0]["authorization"] == "Bearer sk-test-secret-0123456789"


@pytest.mark.parametrize(
    "fault",
    [
        Reply(status=429),
        Reply(status=500),
        Reply(status=503),
        Reply(reset=True),
        Reply(delay=1.5),
    ],
)
def test_transient_faults_are_retried(fault):
    with FakeOpenAI(scripted(fault, fault)) as server:
        r = run(judge(server, timeout=1.0).complete(REQ))
    assert r.status == "ok" and r.attempts == 3
    assert len(server.requests) == 3


def recorded_waits(j):
    """Make ``j`` record each wait between attempts instead of sleeping it."""
    waits = []

    async def sleep(seconds):
        waits.append(seconds)
        await asyncio.sleep(0)

    j.sleep = sleep
    return waits


def test_retry_after_is_honoured():
    with FakeOpenAI(scripted(Reply(status=429, headers={"Retry-After": "1"}))) as server:
        j = judge(server)
        waits = recorded_waits(j)
        r = run(j.complete(REQ))
    assert r.status == "ok" and r.attempts == 2 and waits == [1.0]


def test_unparseable_retry_after_falls_back_to_backoff():
    """``Retry-After: soon`` used to raise out of the client and end the whole run."""
    soon = Reply(status=429, headers={"Retry-After": "soon"})
    with FakeOpenAI(scripted(soon, soon)) as server:
        j = judge(server)  # backoff_base 0.01, backoff_max 0.05
        waits = recorded_waits(j)
        r = run(j.complete(REQ))
    assert r.status == "ok" and r.attempts == 3 and len(server.requests) == 3
    assert len(waits) == 2 and all(0 < w <= 0.05 for w in waits)


def test_huge_retry_after_is_capped():
    """``Retry-After: 86400`` used to sleep a day; the wait is capped by ``max_retry_wait``."""
    with FakeOpenAI(scripted(Reply(status=503, headers={"Retry-After": "86400"}))) as server:
        j = judge(server, max_retry_wait=0.2)
        waits = recorded_waits(j)
        r = run(j.complete(REQ))
    assert r.status == "ok" and r.attempts == 2 and waits == [0.2]


def test_http_date_retry_after_is_parsed():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with FakeOpenAI(scripted(Reply(status=429, headers={"Retry-After": when}))) as server:
        j = judge(server)
        waits = recorded_waits(j)
        r = run(j.complete(REQ))
    assert r.status == "ok" and len(waits) == 1 and 25 < waits[0] <= 30


def test_retry_after_never_waits_past_the_deadline():
    """A wait that would end after the deadline is not slept: the call gives up at once."""
    with FakeOpenAI(lambda body: Reply(status=429, headers={"Retry-After": "30"})) as server:
        j = judge(server, deadline=5.0, max_retries=100)
        waits = recorded_waits(j)
        r = run(j.complete(REQ))
    assert r.status == "error" and "deadline" in r.error and "429" in r.error
    assert waits == [] and r.attempts == 1 and len(server.requests) == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("2.5", 2.5),
        (" 3 ", 3.0),
        ("-5", 0.0),
        ("soon", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
        ("Mon, 32 Foo 2015 99:99:99 GMT", None),
    ],
)
def test_retry_after_header_values(value, seconds):
    assert retry_after_seconds({"retry-after": value}) == seconds


def test_retry_after_ms_and_zoneless_http_date():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "later", "retry-after": "9"}) == 9.0
    naive = email.utils.formatdate(time.time() + 60).rsplit(" ", 1)[0] + " -0000"
    assert 55 < retry_after_seconds({"retry-after": naive}) <= 60


def test_other_4xx_fail_at_once():
    with FakeOpenAI(scripted(Reply(status=400), Reply(status=404))) as server:
        j = judge(server)
        a, b = run(j.complete(REQ)), run(j.complete(REQ))
    assert a.status == "error" and a.attempts == 1 and a.error.startswith("400")
    assert b.status == "error" and b.error.startswith("404")
    assert len(server.requests) == 2


def test_gives_up_after_max_retries_with_reason():
    with FakeOpenAI(lambda body: Reply(status=500)) as server:
        r = run(judge(server, max_retries=2).complete(REQ))
    assert r.status == "error" and r.attempts == 3 and "500" in r.error
    assert len(server.requests) == 3


def test_overall_deadline():
    with FakeOpenAI(lambda body: Reply(status=429, headers={"Retry-After": "30"})) as server:
        t0 = time.monotonic()
        r = run(judge(server, deadline=1.0, max_retries=100).complete(REQ))
    assert r.status == "error" and "deadline" in r.error
    assert time.monotonic() - t0 < 5


def test_seed_rejected_is_dropped_once():
    def script(body):
        if "seed" in body:
            return Reply(status=400, message="Unrecognized request argument supplied: seed")
        return Reply()

    with FakeOpenAI(script) as server:
        j = judge(server)
        first, second = run(j.complete(REQ)), run(j.complete(REQ))
    assert first.status == "ok" and second.status == "ok"
    assert ["seed" in body for body in server.requests] == [True, False, False]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(content=None), "the reply has no content (finish_reason stop)"),
        (Reply(choices=[]), "malformed response: no choices in the reply"),
        (
            Reply(
                choices=[
                    {
                        "index": 0,
                        "finish_reason": "content_filter",
                        "message": {"role": "assistant", "content": None},
                    }
                ]
            ),
            "the reply has no content (finish_reason content_filter)",
        ),
        (
            Reply(
                choices=[
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": None, "refusal": "No."},
                    }
                ]
            ),
            "the judge refused (finish_reason stop): No.",
        ),
    ],
)
def test_reply_without_content_is_an_error_with_reason(reply, reason):
    """It used to be an ``ok`` reply with text "", which the cache then kept for good."""
    with FakeOpenAI(scripted(reply)) as server:
        r = run(judge(server, model="gpt-4o").complete(REQ))
    assert r.status == "error" and r.error == reason and r.text is None
    assert r.attempts == 1 and len(server.requests) == 1
    assert r.usage == {"prompt_tokens": 100, "completion_tokens": 20} and r.cost > 0  # was paid


def test_empty_string_content_is_a_reply():
    """An empty answer did arrive: it is the scorer's to call invalid, as before."""
    with FakeOpenAI(scripted(Reply(content=""))) as server:
        r = run(judge(server).complete(REQ))
    assert r.status == "ok" and r.text == ""


def test_concurrency_limit_is_respected():
    active = {"now": 0, "peak": 0}
    import threading

    lock = threading.Lock()

    def script(body):
        with lock:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
        time.sleep(0.05)
        with lock:
            active["now"] -= 1
        return Reply()

    with FakeOpenAI(script) as server:
        j = judge(server, concurrency=4)

        async def many():
            return await asyncio.gather(*(j.complete(REQ) for _ in range(20)))

        replies = run(many())
    assert all(r.status == "ok" for r in replies)
    assert active["peak"] <= 4 and active["peak"] >= 2


def test_requests_per_minute_limit():
    with FakeOpenAI() as server:
        j = judge(server, requests_per_minute=600)  # 10 per second, bucket starts full

        async def many():
            return await asyncio.gather(*(j.complete(REQ) for _ in range(615)))

        t0 = time.monotonic()
        run(many())
    assert time.monotonic() - t0 >= 1.2  # 15 beyond the bucket at 10/s


def test_preflight_raises_clearly():
    with (
        FakeOpenAI(lambda body: Reply(status=401)) as server,
        pytest.raises(JudgeUnavailable, match="401"),
    ):
        run(judge(server).preflight())
    with FakeOpenAI() as server:
        assert run(judge(server).preflight()).status == "ok"


def test_key_is_redacted_from_errors(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret-key-123456")

    def script(body):
        return Reply(status=400)

    with FakeOpenAI(script) as server:
        j = judge(server, api_key_env="MY_JUDGE_KEY")
        assert j.redact("key=sk-very-secret-key-123456") == "key=***"
        r = run(j.complete(REQ))
    assert "sk-very-secret" not in (r.error or "")
    assert server.headers[0]["authorization"].endswith("sk-very-secret-key-123456")


def test_tokens_per_minute_limit_waits_for_the_bucket():
    from interleave_bench.judges.client import RateLimiter

    async def go():
        limiter = RateLimiter(None, tpm=600)  # 10 tokens per second, a bucket of 600
        t0 = time.monotonic()
        await limiter.acquire(600)  # drains the full bucket at once
        first = time.monotonic() - t0
        await limiter.acquire(10)  # must wait about one second for 10 more tokens
        return first, time.monotonic() - t0

    first, total = run(go())
    assert first < 0.1 and 0.9 <= total <= 2.0


def _no_template(client):
    raise AttributeError("an SDK whose private request builder moved")


@pytest.mark.parametrize("why", ["hooks", "internals moved"])
def test_sdk_full_post_path_when_the_sdk_has_request_hooks(monkeypatch, transport, why):
    """Where the SDK has per-request hooks (providers, workload identity), or its request builder
    is not where we expect it, we take its full ``post``; the policy (retries, 4xx at once) is the
    same."""
    if transport != "sdk":
        pytest.skip("SDK only")
    from interleave_bench.judges import transport as tr

    if why == "hooks":
        monkeypatch.setattr(tr, "sdk_request_is_fixed", lambda client: False)
    else:
        monkeypatch.setattr(tr, "sdk_request_template", _no_template)
    with FakeOpenAI(scripted(Reply(status=429), Reply(), Reply(status=400))) as server:
        j = judge(server)
        ok, bad = run(j.complete(REQ)), run(j.complete(REQ))
    assert ok.status == "ok" and ok.attempts == 2 and ok.usage["completion_tokens"] == 20
    assert bad.status == "error" and bad.error.startswith("400")


def test_sdk_full_post_path_reads_retry_after_and_content_the_same(monkeypatch, transport):
    """Retry-After (unparseable, huge, a date) and a reply without content mean the same on the
    SDK's own ``post`` as on the lean path every other test here takes."""
    if transport != "sdk":
        pytest.skip("SDK only")
    from interleave_bench.judges import transport as tr

    monkeypatch.setattr(tr, "sdk_request_is_fixed", lambda client: False)
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    replies = [Reply(status=429, headers={"Retry-After": v}) for v in ("soon", "86400", date)]
    with FakeOpenAI(scripted(*replies, Reply(), Reply(content=None))) as server:
        j = judge(server, max_retry_wait=20.0)
        waits = recorded_waits(j)
        ok, empty = run(j.complete(REQ)), run(j.complete(REQ))
    assert ok.status == "ok" and ok.attempts == 4
    assert 0 < waits[0] <= 0.05 and waits[1:] == [20.0, 20.0]  # backoff, then both capped
    assert empty.status == "error" and empty.error.startswith("the reply has no content")


def test_cache_writes_inside_a_loop_are_batched_and_flushed_on_close(tmp_path):
    import sqlite3

    from interleave_bench.judges.cache import JudgmentCache
    from interleave_bench.judges.engine import JudgeEngine

    path = tmp_path / "c.sqlite"
    reqs = [JudgeRequest((Part.of_text(f"q{i}"),), max_tokens=16) for i in range(5)]
    with FakeOpenAI() as server:
        engine = JudgeEngine(judge(server), JudgmentCache(path))

        async def go():
            try:
                await asyncio.gather(
                    *(engine.ask(r, protocol="p", template_sha256="t") for r in reqs)
                )
                return [await engine.ask(r, protocol="p", template_sha256="t") for r in reqs]
            finally:
                await engine.aclose()

        again = run(go())
    assert all(r.cached for r in again) and engine.stats.calls == 5
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 5


def test_sdk_decides_url_and_headers(monkeypatch, transport):
    """The default transport sends what ``AsyncOpenAI`` would: its base URL from
    ``OPENAI_BASE_URL`` when none is given, its SDK headers, organisation and project headers."""
    if transport != "sdk":
        pytest.skip("SDK only")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-0123456789")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-test")
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        r = run(judge(server, base_url=None).complete(REQ))
    assert r.status == "ok"
    sent = server.headers[0]
    assert sent["authorization"] == "Bearer sk-test-secret-0123456789"
    assert sent["openai-organization"] == "org-test" and sent["openai-project"] == "proj-test"
    assert sent["user-agent"].startswith("AsyncOpenAI/Python") and "x-stainless-lang" in sent
    assert sent["content-type"] == "application/json"


def test_one_tls_context_per_process():
    from interleave_bench.judges.transport import tls_context

    assert tls_context() is tls_context()


def test_many_requests_keep_order_and_leave_no_slot_held(transport):
    """A burst larger than the concurrency: every reply reaches its own request, and the
    semaphore is whole again afterwards (the yields after a reply must not leak a slot)."""

    def echo(body):
        return Reply(content=f"### Score\n{user_text(body).split()[-1]}")

    reqs = [JudgeRequest((Part.of_text(f"item {i}"),), max_tokens=8) for i in range(40)]
    with FakeOpenAI(echo) as server:
        j = judge(server, concurrency=4)

        async def go():
            out = await asyncio.gather(*(j.complete(r) for r in reqs))
            free = j._slots._value
            await j.aclose()
            return out, free

        replies, free = run(go())
    assert [r.text.split()[-1] for r in replies] == [str(i) for i in range(40)]
    assert free == 4


def test_proxy_from_the_environment(monkeypatch, transport):
    """``HTTP_PROXY`` is honoured (as the SDK's own client does) and ``NO_PROXY`` bypasses it:
    the stand-in server plays the proxy for a judge host that does not resolve."""
    from interleave_bench.judges.transport import env_proxy

    with FakeOpenAI() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/v1", 1)[0])
        monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
        assert env_proxy("http://judge.invalid/v1/chat/completions") is not None
        assert env_proxy("http://bypassed.invalid/v1/chat/completions") is None
        j = judge(proxy, base_url="http://judge.invalid/v1", max_retries=0, timeout=2.0)
        r = run(j.complete(REQ))
    assert r.status == "ok", r.error
    assert proxy.headers[0]["host"] == "judge.invalid"
