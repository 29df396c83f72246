"""Sample generations from a trained model: a quick qualitative look at what an update learned.

The Dagster UI shows a few of them on the challenger's materialization, and the MLflow run keeps them
as ``samples/generations.json``. Prompts are the first words of held-out rows (already PII-redacted by
the quality gate); callers still re-scan the outputs for PII before showing them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.device import select_device
from training.modeling import load_model

__all__ = ["prompts_from_texts", "sample_generations"]


def prompts_from_texts(texts: list[str], n: int = 3, words: int = 3) -> list[str]:
    """The first ``words`` whitespace-separated words of the first ``n`` non-empty ``texts``.

    Returns:
        Up to ``n`` prompts (str), in input order; fewer when fewer texts have a word.
    """
    prompts: list[str] = []
    for text in texts:
        head = " ".join((text or "").split()[:words])
        if head:
            prompts.append(head)
        if len(prompts) == n:
            break
    return prompts


@torch.no_grad()
def sample_generations(
    model_dir: str | Path,
    prompts: list[str],
    *,
    max_new_tokens: int = 24,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Continue each prompt with nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural
    Text Degeneration", §3.1) through ``transformers``' ``generate``.

    Args:
        model_dir: a ``save_pretrained`` directory or Hugging Face id (see ``training.modeling.load_model``).
        prompts: prompt strings; an empty list returns [].
        max_new_tokens: tokens generated per prompt (int >= 1), capped so prompt + completion fit the
            model's position table (the prompt keeps at most half of it).
        temperature, top_p: sampling parameters (> 0; 0 < top_p <= 1).
        seed: torch seed, so the same model and prompts give the same samples.

    Returns:
        ``[{"prompt": str, "completion": str, "prompt_tokens": int, "new_tokens": int}]``, one per prompt;
        the completion excludes the prompt; ``prompt_tokens`` counts the (possibly truncated) prompt.

    Raises:
        ValueError: on ``max_new_tokens`` < 1 or a non-positive temperature.
    """
    if max_new_tokens < 1 or temperature <= 0:
        raise ValueError(f"need max_new_tokens >= 1 and temperature > 0, got {max_new_tokens}, {temperature}")
    if not prompts:
        return []
    device = select_device()
    model, tokenizer = load_model(model_dir, device=device)
    torch.manual_seed(seed)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    out: list[dict[str, str]] = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(device)
        new_tokens = max_new_tokens
        if limit is not None:  # stay inside the position table: keep at most half of it for the prompt
            ids = {k: v[:, : max(1, limit // 2)] for k, v in ids.items()}
            new_tokens = max(1, min(max_new_tokens, limit - ids["input_ids"].shape[1]))
        generated = model.generate(
            **ids,
            max_new_tokens=new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_ids = generated[0, ids["input_ids"].shape[1] :]
        completion = tokenizer.decode(new_ids, skip_special_tokens=True)
        out.append(
            {
                "prompt": prompt,
                "completion": completion,
                "prompt_tokens": int(ids["input_ids"].shape[1]),
                "new_tokens": int(new_ids.shape[0]),
            }
        )
    return out
