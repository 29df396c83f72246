import pytest
from transformers import AutoTokenizer

from training.tokenizer import EOS_TOKEN, PAD_TOKEN, tokenizer_sha256, train_tokenizer

TRICKY = [
    "héllo wörld, ça va? Größe",
    "emoji 🎉🚀 and ZWJ family 👨‍👩‍👧",
    "日本語のテキスト 中文 한국어",
    "  leading spaces\ttabs\nnew lines\r\n",
    "",
]


def test_round_trip_is_exact_including_unicode_and_emoji(corpus):
    tok = train_tokenizer(corpus, vocab_size=300, model_max_length=32)
    for text in TRICKY + corpus[:20]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_special_tokens_and_size(corpus):
    tok = train_tokenizer(corpus, vocab_size=300, model_max_length=32)
    assert (tok.eos_token, tok.bos_token, tok.unk_token, tok.pad_token) == (EOS_TOKEN, EOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    assert len(tok) == 300
    assert tok.model_max_length == 32


def test_training_is_deterministic_and_sha_survives_save_load(corpus, tmp_path):
    a = train_tokenizer(corpus, vocab_size=300, model_max_length=32)
    b = train_tokenizer(list(corpus), vocab_size=300, model_max_length=32)
    assert tokenizer_sha256(a) == tokenizer_sha256(b)
    assert len(tokenizer_sha256(a)) == 64
    a.save_pretrained(tmp_path)
    assert tokenizer_sha256(AutoTokenizer.from_pretrained(tmp_path)) == tokenizer_sha256(a)
    other = train_tokenizer(corpus[:100], vocab_size=300, model_max_length=32)
    assert tokenizer_sha256(other) != tokenizer_sha256(a)


def test_too_small_vocab_is_rejected(corpus):
    with pytest.raises(ValueError, match="`vocab_size`"):
        train_tokenizer(corpus, vocab_size=100, model_max_length=32)
