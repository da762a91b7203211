"""core.ship.params without a server: the field table, OpenAI's sampling rule and the stop cut, streamed in pieces
that split the stop sequence (tests/test_serve_openai.py drives the same through a real serve-model)."""
from __future__ import annotations

import asyncio

from core.ship import params

CHAT = params.CHAT
HI = [{"role": "user", "content": "Hi"}]


def test_a_field_is_honoured_accepted_at_its_no_op_value_or_refused_by_name():
    ok = {"messages": HI, "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0, "logprobs": False,
          "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "stop": ["a", "b"]}
    assert params.refusal(ok, CHAT) is None
    for field, value in (("n", 3), ("presence_penalty", 0.1), ("logprobs", True), ("tools", [{"type": "function"}]),
                         ("response_format", {"type": "json_object"}), ("top_k", 5)):
        message = params.refusal({"messages": HI, field: value}, CHAT)
        assert message and message.startswith(field), (field, value, message)
    assert params.refusal({"prompt": "Hi", "logprobs": 0}, params.COMPLETIONS) is None  # an int there: 0 is none
    assert "stop" in params.refusal({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, CHAT)
    assert "stop" in params.refusal({"messages": HI, "stop": ""}, CHAT)
    assert params.refusal({"anything": 1}, "/v1/models") is None  # only generating routes have a table


def test_temperature_zero_is_greedy_above_zero_or_top_p_below_one_samples():
    assert params.sampling({"temperature": 0}) is False
    assert params.sampling({"temperature": 0, "top_p": 0.5}) is False
    assert params.sampling({"temperature": 0.7}) is True
    assert params.sampling({"top_p": 0.9}) is True
    assert params.sampling({"top_p": 1}) is None and params.sampling({}) is None  # the model's own config decides


class _Pieces:
    """A streaming queue holding ``items`` (what transformers' DirectStreamer puts, then None)."""

    def __init__(self, items) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        for item in items:
            self.queue.put_nowait(item)

    async def get(self):
        return await self.queue.get()

    def get_nowait(self):
        return self.queue.get_nowait()


def _streamed(pieces, stops) -> tuple[str, list]:
    async def read():
        queue, out = params.StopQueue(_Pieces([*pieces, None]), stops), []
        while (item := await queue.get()) is not None:
            out.append(item)
        return "".join(out), out

    return asyncio.run(read())


def test_stop_ends_the_text_before_the_stop_sequence_even_split_across_pieces():
    assert params.cut_at_stop("Hello world", ["o w", "xyz"]) == ("Hell", True)
    assert params.cut_at_stop("Hello", ["xyz"]) == ("Hello", False)
    assert params.held_back("Hello wo", ["world"]) == 2 and params.held_back("Hello", ["world"]) == 0
    assert _streamed(["Hel", "lo w", "or", "ld and more"], ["world"])[0] == "Hello "
    text, pieces = _streamed(["Hello w", "ater"], ["world"])  # "w" held back, then let go: nothing lost
    assert pieces == ["Hello ", "water"]
    assert _streamed(["a", "b"], ["zz"]) == ("ab", ["a", "b"])


def test_continuous_batching_refuses_what_one_shared_generation_config_would_ignore():
    for field, value in (("temperature", 0.7), ("top_p", 0.5), ("seed", 1),
                         ("generation_config", '{"do_sample": true}')):
        message = params.batching_refusal({"messages": HI, field: value})
        assert message and message.startswith(field) and "continuous batching" in message, (field, message)
    assert params.batching_refusal({"messages": HI, "stop": "x", "max_tokens": 5}) is None
    assert params.batching_refusal({"messages": HI, "generation_config": '{"max_new_tokens": 5}'}) is None
