"""The official `openai` Python SDK against byok-proxy.

Run by `cargo test --test sdk` (tests/sdk.rs), one scenario per process:

    BYOK_BASE_URL=http://127.0.0.1:PORT/v1 BYOK_TOKEN=bkp_... python3 openai_client.py SCENARIO

Scenarios: chat, chat_stream, embeddings, models, model_retrieve. Every check is an
`assert` (or an SDK exception): any mismatch exits non-zero. The last line printed on
success is `SDK-OK <scenario>`; the Rust side requires it.
"""

import json
import os
import sys

import openai

CHAT_MODEL = "openai/gpt-4o"
EMBEDDING_MODEL = "openai/text-embedding-3-small"
REPLY = "Hello from fake"


def client() -> openai.OpenAI:
    return openai.OpenAI(
        base_url=os.environ["BYOK_BASE_URL"],
        api_key=os.environ["BYOK_TOKEN"],
        timeout=15.0,
        max_retries=0,
    )


def chat(c: openai.OpenAI) -> None:
    raw = c.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=16,
    )
    print("status:", raw.status_code)
    print("headers:", dict(raw.headers))
    assert raw.status_code == 200, raw.status_code
    assert raw.headers.get("set-cookie") is None, "upstream set-cookie leaked to the client"
    assert raw.headers.get("x-request-id"), "no x-request-id on the response"
    resp = raw.parse()
    print("completion:", resp.model_dump_json())
    assert resp.object == "chat.completion", resp.object
    assert resp.model == CHAT_MODEL, resp.model
    assert len(resp.choices) == 1, resp.choices
    choice = resp.choices[0]
    assert choice.message.role == "assistant", choice.message.role
    assert choice.message.content == REPLY, repr(choice.message.content)
    assert choice.finish_reason == "stop", choice.finish_reason
    assert resp.usage is not None, "no usage"
    assert resp.usage.prompt_tokens == 11, resp.usage
    assert resp.usage.completion_tokens == 7, resp.usage
    assert resp.usage.total_tokens == 18, resp.usage


def chat_stream(c: openai.OpenAI) -> None:
    stream = c.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas = []
    finish_reasons = []
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        assert chunk.model == CHAT_MODEL, chunk.model
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    text = "".join(deltas)
    print("chunks:", chunks, "deltas:", json.dumps(deltas), "text:", repr(text))
    assert deltas == ["Hello", " from", " fake"], deltas
    assert text == REPLY, repr(text)
    assert finish_reasons == ["stop"], finish_reasons
    assert usage is not None, "no usage chunk although include_usage was requested"
    assert usage.total_tokens == 18, usage


def embeddings(c: openai.OpenAI) -> None:
    resp = c.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "second text"])
    print("embeddings:", resp.model_dump_json())
    assert resp.object == "list", resp.object
    assert resp.model == EMBEDDING_MODEL, resp.model
    assert [d.index for d in resp.data] == [0, 1], resp.data
    for d in resp.data:
        assert d.embedding == [0.1, 0.2, 0.3], d.embedding
    assert resp.usage.prompt_tokens == 5, resp.usage
    assert resp.usage.total_tokens == 5, resp.usage


def models(c: openai.OpenAI) -> None:
    ids = sorted(m.id for m in c.models.list())
    print("models:", json.dumps(ids))
    expected = sorted(x for x in os.environ["BYOK_EXPECT_MODELS"].split(",") if x)
    assert ids == expected, f"models.list() gave {ids}, expected {expected}"


def model_retrieve(c: openai.OpenAI) -> None:
    # The SDK percent-encodes the id: GET /v1/models/openai%2Fgpt-4o.
    m = c.models.retrieve(CHAT_MODEL)
    print("model:", m.model_dump_json())
    assert m.id == CHAT_MODEL, m.id
    assert m.object == "model", m.object
    assert m.owned_by == "openai", m.owned_by
    try:
        c.models.retrieve("openai/no-such-model")
    except openai.NotFoundError as e:
        print("unknown model:", e.status_code, json.dumps(e.body))
        assert e.status_code == 404, e.status_code
    else:
        raise AssertionError("retrieving an unknown model did not answer 404")


SCENARIOS = {
    "chat": chat,
    "chat_stream": chat_stream,
    "embeddings": embeddings,
    "models": models,
    "model_retrieve": model_retrieve,
}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: openai_client.py {{{'|'.join(SCENARIOS)}}}")
    scenario = sys.argv[1]
    print("openai python SDK", openai.__version__, "scenario", scenario)
    SCENARIOS[scenario](client())
    print("SDK-OK", scenario)


if __name__ == "__main__":
    main()
