"""Information-based subset selection (ISA) of "Efficient Alignment of Large Language Models via Data Sampling"
(Khera, Ghosh and Dutta 2024): keep the training rows that carry the most information about the data's distribution.

Each row is embedded; a Gaussian mixture (two components, as the paper) is fitted to the embeddings, and the
dataset's differential entropy is estimated by its mean surprisal under the fit,

    H(D) = -1/|D| sum_{x in D} log p_D(x),

where p_D is the mixture fitted to D. A row's information is the entropy it adds, the change when it is left out,

    dH_j = H(D) - H(D \\ {x_j})        (p refitted to D \\ {x_j}, warm-started from the fit to D),

and the `k` rows of largest dH_j are kept: rows far from the bulk raise the entropy; near-duplicates of many others
lower it. Embeddings are the base policy's mean last hidden state over a row's prompt and first reference, reduced
by PCA before the fit (a full-covariance mixture in the model's width would need more rows than a dataset has).
`task_args.selection: {mode: isa, k: K}` selects this way before training; `bench/data_scaling.py` runs the paper's
data-scaling curve (alignment metric against the fraction of data) beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmalign.text.policy import prompt_text

__all__ = ["embed_rows", "entropy_changes", "mixture_entropy"]


def _sklearn():
    """scikit-learn's PCA and GaussianMixture: an optional extra, as only this selection mode needs them."""
    try:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture
    except ImportError as err:
        raise ImportError("selection mode isa fits a Gaussian mixture with scikit-learn: pip install "
                          "'mmalign[data]' (or scikit-learn).") from err
    return PCA, GaussianMixture


def row_text(row) -> str:
    """What a row is embedded as: its prompt, and its first reference when it has references."""
    refs = row.get("references") if isinstance(row, dict) else None
    return prompt_text(row) + ("\n" + refs[0] if refs else "")


@torch.no_grad()
def embed_rows(model, tokenizer, rows: Sequence, batch_size: int = 16) -> np.ndarray:
    """(n, hidden) float64: each row's mean last hidden state of `model` over the tokens of `row_text(row)`."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), batch_size):
        texts = [row_text(r) for r in rows[start:start + batch_size]]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(device)
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu().double())
    return torch.cat(out).numpy()


def mixture_entropy(x: np.ndarray, components: int = 2, seed: int = 0, **init) -> tuple[float, object]:
    """H(x) = -mean log p(x) under a `components`-Gaussian mixture fitted to `x`; returns (H, the fit)."""
    mixture = _sklearn()[1](components, covariance_type="full", random_state=seed, max_iter=200, **init)
    fit = mixture.fit(x)
    return float(-fit.score_samples(x).mean()), fit


def entropy_changes(x: np.ndarray, components: int = 2, dims: int = 8, seed: int = 0) -> np.ndarray:
    """dH_j = H(x) - H(x without row j) for every row (the module docstring), after PCA to `dims` dimensions."""
    n = len(x)
    if n < 2 * max(components, dims):
        raise ValueError(f"{n} rows are too few to fit {components} Gaussians in {dims} dimensions; "
                         f"lower dims or components, or select from more rows.")
    z = _sklearn()[0](min(dims, x.shape[1]), random_state=seed).fit_transform(x)
    h_all, fit = mixture_entropy(z, components, seed)
    warm = {"weights_init": fit.weights_, "means_init": fit.means_, "precisions_init": fit.precisions_}
    keep = np.ones(n, dtype=bool)
    changes = np.empty(n)
    for j in range(n):
        keep[j] = False
        changes[j] = h_all - mixture_entropy(z[keep], components, seed, **warm)[0]
        keep[j] = True
    return changes
