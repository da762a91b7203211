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
    assert params.batching_refusal({"messages": HI, "generation_config": '{"max_new_tokens": 5}'})  # would be shared


def test_sampling_draws_from_the_whole_distribution_unless_the_model_sets_top_k(tiny_model):
    """OpenAI has no top_k: temperature and top_p alone shape the distribution. transformers fills an unset top_k
    with its global default of 50 at generate(); the served generation must not (unless the model's config sets it)."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from core.ship import guard

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    inputs = {"input_ids": tokenizer("Hi")["input_ids"]}

    def effective(body: dict, own_top_k=None) -> GenerationConfig:
        model.generation_config.top_k = own_top_k
        gen_config = copy.deepcopy(model.generation_config)  # what transformers' handler starts from
        gen_config.max_new_tokens = 8
        for name in ("temperature", "top_p"):
            if body.get(name) is not None:
                setattr(gen_config, name, body[name])
        token = guard._STATE.set(guard.check_body({"messages": HI, **body}, CHAT))
        try:
            guard.GuardedManager(None, batching=False)._prepare(model, tokenizer, inputs, gen_config)
        finally:
            guard._STATE.reset(token)
        return model._prepare_generation_config(gen_config)[0]  # what generate() then runs with

    for body in ({"temperature": 1.0}, {"top_p": 0.9}, {"temperature": 0.7, "top_p": 0.95}):
        config = effective(body)
        assert config.do_sample and config.top_k in (0, None), (body, config.top_k)
    assert effective({"temperature": 1.0}, own_top_k=20).top_k == 20  # the model's own setting stays


def test_a_generation_config_without_a_length_gets_transformers_default_not_a_500(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from core.ship import guard

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    gen_config = GenerationConfig(do_sample=True)  # what transformers builds from '{"do_sample": true}'
    state = guard.check_body({"messages": HI, "generation_config": '{"do_sample": true}'}, CHAT)
    guard.check_generation(model, tokenizer, {"input_ids": [1, 2, 3]}, gen_config, state)
    assert gen_config.max_new_tokens == (model.generation_config.max_length or 20) - 3
