"""serve-model with ``--continuous-batching``: transformers' batching shares one generation config among the
requests it batches, so a per-request temperature, top_p, seed or sampling generation_config would be ignored.
Such a request is a 400 naming the parameter and why, never a 200 that ignores it (issue 20)."""
from __future__ import annotations

import json

import pytest


HELLO = [{"role": "user", "content": "Tell me about my bill."}]


@pytest.mark.slow
def test_continuous_batching_refuses_per_request_sampling_by_name(serve, tiny_model):  # noqa: F811
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=serve(tiny_model, "--continuous-batching"), api_key="unused", max_retries=0,
                    timeout=120)
    model = f"base:{tiny_model}"
    sampled = json.dumps({"do_sample": True, "temperature": 0.9})
    for name, kwargs in (("temperature", {"temperature": 1}), ("top_p", {"top_p": 0.9}), ("seed", {"seed": 3}),
                         ("temperature", {"temperature": 0}),
                         ("generation_config", {"extra_body": {"generation_config": sampled}})):
        with pytest.raises(BadRequestError) as refused:
            client.chat.completions.create(model=model, messages=HELLO, max_tokens=3, **kwargs)
        message = refused.value.body["message"]
        assert message.startswith(name) and "continuous batching" in message, (name, message)
    with pytest.raises(BadRequestError, match="temperature.*continuous batching"):
        client.completions.create(model=model, prompt="Hi", max_tokens=3, temperature=0.5)
    with pytest.raises(BadRequestError, match="generation_config"):  # the first one would become everyone's
        client.chat.completions.create(model=model, messages=HELLO,
                                       extra_body={"generation_config": json.dumps({"max_new_tokens": 3})})
    # what batching takes per request is still served: the answer's length
    answer = client.chat.completions.create(model=model, messages=HELLO, max_tokens=3)
    assert answer.usage.completion_tokens <= 3
