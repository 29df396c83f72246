"""Sample generations from a real (tiny) model: deterministic per seed, inside the position table."""

import pytest

from training.generate import prompts_from_texts, sample_generations


def test_prompts_take_the_first_words_of_non_empty_texts():
    assert prompts_from_texts(["", "  ", "fast json parser for python", "a b"], n=2, words=2) == ["fast json", "a b"]


def test_samples_are_seeded_and_fit_the_position_table(base_dir, tiny_model):
    model, tokenizer = tiny_model
    limit = model.config.n_positions
    long_prompt = " ".join(["package"] * (2 * limit))  # longer than the whole position table
    a = sample_generations(base_dir, ["a python library", long_prompt], max_new_tokens=10 * limit, seed=3)
    b = sample_generations(base_dir, ["a python library", long_prompt], max_new_tokens=10 * limit, seed=3)
    assert a == b
    assert [s["prompt"] for s in a] == ["a python library", long_prompt]
    for s in a:
        assert s["new_tokens"] >= 1 and s["prompt_tokens"] + s["new_tokens"] <= limit
    assert a[1]["prompt_tokens"] == limit // 2  # the long prompt was cut to half the table
    assert sample_generations(base_dir, []) == []


def test_bad_arguments_raise(base_dir):
    with pytest.raises(ValueError):
        sample_generations(base_dir, ["x"], max_new_tokens=0)
