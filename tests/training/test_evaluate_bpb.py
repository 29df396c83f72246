import math

import pytest
import torch

from training.data import token_ids
from training.evaluate import evaluate

CPU = torch.device("cpu")


def test_bits_per_byte_is_consistent_with_loss(tiny_model, corpus):
    model, tok = tiny_model
    texts = corpus[:50] + ["ünïcödé 🎉"]
    r = evaluate(model, tok, texts, seq_len=32, batch_size=8, device=CPU)
    assert r.texts == len(texts)
    assert r.bytes == sum(len(t.encode("utf-8")) for t in texts) + len(texts)
    assert r.tokens == sum(len(ids) + 1 for ids in token_ids(tok, texts))
    assert r.bits_per_byte == pytest.approx(r.loss * r.tokens / math.log(2) / r.bytes, rel=1e-12)
    assert r.perplexity == pytest.approx(math.exp(r.loss))
    # an untrained model is close to uniform over the vocabulary
    assert abs(r.loss - math.log(len(tok))) < 0.5
    assert r.to_dict("champion_new") == {
        "champion_new_loss": r.loss,
        "champion_new_ppl": r.perplexity,
        "champion_new_bpb": r.bits_per_byte,
        "champion_new_tokens": float(r.tokens),
        "champion_new_bytes": float(r.bytes),
        "champion_new_texts": float(r.texts),
    }


def test_result_does_not_depend_on_batch_size(tiny_model, corpus):
    model, tok = tiny_model
    a = evaluate(model, tok, corpus[:30], seq_len=32, batch_size=1, device=CPU)
    b = evaluate(model, tok, corpus[:30], seq_len=32, batch_size=64, device=CPU)
    assert a.tokens == b.tokens
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_empty_texts_give_none_and_mode_is_restored(tiny_model):
    model, tok = tiny_model
    assert evaluate(model, tok, [], seq_len=32, batch_size=8, device=CPU) is None
    model.train()
    evaluate(model, tok, ["A tiny ORM."], seq_len=32, batch_size=8, device=CPU)
    assert model.training
