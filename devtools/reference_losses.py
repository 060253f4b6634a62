"""The official per-report local (GLoRIA-style) loss, step by step: the reference of the batched
`modeling_alta.losses_alta.local_contrastive_loss` in tests/test_losses.py and benchmarks/bench_local_loss.py."""

import torch
import torch.nn.functional as F

__all__ = ["reference_local_loss", "reference_local_similarities"]


def reference_local_similarities(image_local, text_local, word_counts, temperatures, return_attention=False):
    """The official algorithm, one report at a time, step by step (including its naive log(sum(exp))).

    image_local [I, R, D], text_local [J, T, D], word_counts [J] (words of each report: the first ones),
    temperatures (t1, t2, t3). Returns S [I, J] (rows = images, already x t3); with `return_attention=True` also
    the list of each report's attention over its own image's regions ([words_j, R], the official `att_maps`).
    """
    t1, t2, t3 = temperatures
    num_images = image_local.shape[0]
    columns, attention_maps = [], []
    for j in range(text_local.shape[0]):
        n = int(word_counts[j])
        words = text_local[j, :n].T.unsqueeze(0).repeat(num_images, 1, 1)  # [I, D, n], the official layout
        attention = torch.softmax(torch.bmm(image_local, words), dim=-1)  # [I, R, n]: each region over the words
        attention = torch.softmax(t1 * attention.transpose(1, 2), dim=-1)  # [I, n, R]: each word over the regions
        if return_attention:
            attention_maps.append(attention[j])
        context = torch.bmm(attention, image_local)  # [I, n, D]
        words = words.transpose(1, 2)
        norms = (torch.linalg.vector_norm(words, dim=-1) * torch.linalg.vector_norm(context, dim=-1)).clamp(min=1e-8)
        cos = (words * context).sum(-1) / norms
        columns.append(torch.log(torch.exp(t2 * cos).sum(dim=1)))
    similarities = t3 * torch.stack(columns, dim=1)
    return (similarities, attention_maps) if return_attention else similarities


def reference_local_loss(image_local, text_local, word_counts, temperatures):
    similarities = reference_local_similarities(image_local, text_local, word_counts, temperatures)
    labels = torch.arange(similarities.shape[0])
    return (F.cross_entropy(similarities, labels) + F.cross_entropy(similarities.T, labels)) / 2
