import pytest
import torch

from training.data import IGNORE_INDEX, heldout_mask, pack_texts, split_block, token_ids


def test_heldout_mask_is_deterministic_and_close_to_fraction():
    ids = [f"rec-{i}" for i in range(10_000)]
    mask = heldout_mask(ids, 0.1)
    assert mask == heldout_mask(ids, 0.1)
    assert 0.08 < sum(mask) / len(mask) < 0.12
    # the side of an id does not depend on its neighbours or position
    assert heldout_mask(list(reversed(ids)), 0.1) == list(reversed(mask))
    assert heldout_mask(ids[:3], 0.1) == mask[:3]
    # a different salt gives a different split; the extremes are exact
    assert heldout_mask(ids, 0.1, salt="other") != mask
    assert not any(heldout_mask(ids[:100], 0.0)) and all(heldout_mask(ids[:100], 1.0))


def test_heldout_mask_rejects_bad_fraction():
    with pytest.raises(ValueError, match="`fraction`"):
        heldout_mask(["a"], 1.5)


def test_pack_texts_shapes_dtype_and_eos_layout(tiny_model):
    _, tok = tiny_model
    texts = ["A fast HTTP client for Python."] * 40
    blocks = pack_texts(tok, texts, seq_len=16)
    assert blocks.dtype == torch.int64 and blocks.shape[1] == 17
    stream = [tok.eos_token_id]
    for ids in token_ids(tok, texts):
        stream += ids + [tok.eos_token_id]
    n_full = (len(stream) - 1) // 16
    assert blocks.shape[0] == n_full
    # consecutive blocks overlap by one token; together they are the stream's prefix
    assert torch.equal(blocks[:-1, -1], blocks[1:, 0])
    rebuilt = torch.cat([blocks[0], *(b[1:] for b in blocks[1:])]).tolist()
    assert rebuilt == stream[: len(rebuilt)]
    assert blocks[0, 0].item() == tok.eos_token_id
    assert (blocks == tok.eos_token_id).any(dim=1).all()  # every block sees a document boundary here


def test_keep_tail_pads_with_ignore_index_and_scores_every_token(tiny_model):
    _, tok = tiny_model
    texts = ["A tiny ORM for Django.", "A typed logger for asyncio."] * 7
    expected_targets = sum(len(ids) + 1 for ids in token_ids(tok, texts))
    blocks = pack_texts(tok, texts, seq_len=16, keep_tail=True)
    _, targets = split_block(blocks)
    assert int((targets != IGNORE_INDEX).sum()) == expected_targets
    dropped = pack_texts(tok, texts, seq_len=16)
    assert (dropped != IGNORE_INDEX).all() and dropped.shape[0] == blocks.shape[0] - 1


def test_short_stream_gives_one_padded_block(tiny_model):
    _, tok = tiny_model
    blocks = pack_texts(tok, ["hi"], seq_len=32)
    ids = token_ids(tok, ["hi"])[0]
    assert blocks.shape == (1, 33)
    n = len(ids) + 2
    assert blocks[0, :n].tolist() == [tok.eos_token_id, *ids, tok.eos_token_id]
    assert (blocks[0, n:] == IGNORE_INDEX).all()


def test_empty_texts_give_zero_blocks(tiny_model):
    _, tok = tiny_model
    blocks = pack_texts(tok, [], seq_len=8)
    assert blocks.shape == (0, 9) and blocks.dtype == torch.int64


def test_split_block_masks_padding_in_inputs_only():
    blocks = torch.tensor([[0, 5, 6, IGNORE_INDEX, IGNORE_INDEX]])
    x, y = split_block(blocks)
    assert x.tolist() == [[0, 5, 6, 0]]
    assert y.tolist() == [[5, 6, IGNORE_INDEX, IGNORE_INDEX]]
