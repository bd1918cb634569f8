"""The official `anthropic` Python SDK against byok-proxy's /v1/messages.

Run by `cargo test --test sdk` (tests/sdk.rs):

    BYOK_BASE_URL=http://127.0.0.1:PORT BYOK_TOKEN=bkp_... python3 anthropic_client.py

The base URL is the proxy origin (the SDK appends /v1/messages); the app token is the
api_key, which the SDK sends as `x-api-key`. Every check is an `assert`: any mismatch exits
non-zero. The last line printed on success is `SDK-OK messages_stream`.
"""

import json
import os

import anthropic

MODEL = "anthropic/claude-sonnet-4.5"
REPLY = "Hello from fake"


def main() -> None:
    print("anthropic python SDK", anthropic.__version__)
    client = anthropic.Anthropic(
        base_url=os.environ["BYOK_BASE_URL"],
        api_key=os.environ["BYOK_TOKEN"],
        timeout=15.0,
        max_retries=0,
    )
    deltas = []
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
    ) as stream:
        for text in stream.text_stream:
            deltas.append(text)
        final_text = stream.get_final_text()
        final = stream.get_final_message()
    print("deltas:", json.dumps(deltas), "final text:", repr(final_text))
    print("final message:", final.model_dump_json())
    assert "".join(deltas) == REPLY, deltas
    assert final_text == REPLY, repr(final_text)
    assert final.model == MODEL, final.model
    assert final.role == "assistant", final.role
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.input_tokens == 12, final.usage
    assert final.usage.output_tokens == 6, final.usage
    print("SDK-OK messages_stream")


if __name__ == "__main__":
    main()
