"""Batched local (GLoRIA-style) loss vs the official per-report loop: forward + backward, same run, same inputs.

    python -m benchmarks.bench_local_loss                    # batch 96, base shapes, realistic report lengths
    python -m benchmarks.bench_local_loss --lengths full     # every report 127 words (the worst case)

Shapes default to the base model: 196 local regions (4 views x 49 visible patches), up to 127 words per report
([SEP] included), 128-d projections. Report lengths are drawn from the FINDINGS + IMPRESSION sections of the real
Indiana University reports (fetched at run time from the torchxrayvision wheel on the package registry, see
`dataset_scripts.torchxrayvision_data`; approximate WordPiece count: words and punctuation + [SEP], capped at 127),
with one full-length and one single-word report always included; when the registry cannot be reached a fixed
synthetic distribution is used (printed). Timings alternate between the two implementations and report the
median. The per-report loop is `devtools.reference_losses`, also the tests' reference.
"""

import argparse
import re
import warnings
import statistics
import time

import torch
import torch.nn.functional as F

from alta_hf.dataset_scripts.torchxrayvision_data import (
    TorchXRayVisionUnavailable,
    fetch_torchxrayvision_file,
    read_indiana_reports,
)
from devtools.reference_losses import reference_local_loss, reference_local_similarities
from alta_hf.modeling_alta.losses_alta import local_contrastive_loss


def report_lengths(batch_size: int, max_words: int, kind: str, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    if kind == "full":
        return torch.full((batch_size,), max_words), f"all {max_words}"
    try:
        reports = read_indiana_reports(fetch_torchxrayvision_file("NLMCXR_reports.tgz"))
    except TorchXRayVisionUnavailable as error:
        print(f"real report lengths unavailable ({error}); using synthetic ones")
        pool = [int(x) for x in torch.randint(12, max_words + 1, (2000,), generator=generator)]
        source = "synthetic uniform lengths (Indiana University reports not reachable)"
    else:
        pool = [min(len(re.findall(r"\w+|[^\w\s]", text)) + 1, max_words) for text in reports]
        source = f"real IU report lengths ({len(pool)} reports)"
    pick = torch.randint(len(pool), (batch_size,), generator=generator)
    lengths = torch.tensor([pool[i] for i in pick])
    lengths[0], lengths[1] = max_words, 1
    return lengths, source


def autograd_local_similarities(image_local, text_local, text_mask, temperatures):
    """The batched algorithm written with plain autograd ops (no custom backward), for comparison only."""
    t1, t2, t3 = temperatures
    num_images, (num_texts, max_words) = image_local.shape[0], text_mask.shape
    words = text_local[text_mask]
    word_to_text = text_mask.nonzero()[:, 0]
    scores = torch.matmul(words, image_local.mT)  # [I, n, R]
    shift = scores.detach().new_full((num_images, num_texts, scores.shape[2]), -torch.inf)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        shift = shift.index_reduce_(1, word_to_text, scores.detach(), "amax").index_select(1, word_to_text)
    exp = torch.exp(scores - shift)
    sums = exp.new_zeros(num_images, num_texts, exp.shape[2]).index_add(1, word_to_text, exp)
    p_words = exp / sums.index_select(1, word_to_text)
    context = torch.bmm(torch.softmax(t1 * p_words, dim=-1), image_local)
    norms = (torch.linalg.vector_norm(context, dim=-1) * torch.linalg.vector_norm(words, dim=-1)).clamp(min=1e-8)
    cos = (context * words).sum(-1) / norms
    padded = cos.new_full((num_images, num_texts, max_words), -torch.inf)
    padded = padded.masked_scatter(text_mask.expand(num_images, -1, -1), t2 * cos)
    return t3 * torch.logsumexp(padded, dim=-1)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--regions", type=int, default=196)
    parser.add_argument("--max-words", type=int, default=127)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--lengths", choices=["realistic", "full"], default="realistic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--with-autograd", action="store_true", help="also time the batched ops under plain autograd")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    lengths, source = report_lengths(args.batch_size, args.max_words, args.lengths, generator)
    mask = torch.arange(args.max_words) < lengths[:, None]
    # Feature scales like the model's local projections at initialisation (norms of a few units).
    image_local = torch.randn(args.batch_size, args.regions, args.dim, generator=generator) * 0.3
    text_local = torch.randn(args.batch_size, args.max_words, args.dim, generator=generator) * 0.3
    log_temperatures = torch.full((3,), torch.log(torch.tensor(1 / 0.07)).item())
    labels = torch.arange(args.batch_size)

    def symmetric_cross_entropy(similarities):
        return (F.cross_entropy(similarities, labels) + F.cross_entropy(similarities.T, labels)) / 2

    losses = {
        "loop": lambda img, txt, t: reference_local_loss(img, txt, lengths, t),
        "batched": lambda img, txt, t: local_contrastive_loss(img, txt, mask, t),
    }
    if args.with_autograd:
        losses["autograd"] = lambda img, txt, t: symmetric_cross_entropy(autograd_local_similarities(img, txt, mask, t))

    def run(name):
        img = image_local.clone().requires_grad_()
        txt = text_local.clone().requires_grad_()
        logt = log_temperatures.clone().requires_grad_()
        loss = losses[name](img, txt, logt.exp())
        loss.backward()
        return loss.detach(), img.grad, txt.grad, logt.grad

    # The six matrix products the algorithm needs (2 forward, 4 backward), nothing else: a floor for any
    # implementation of the same arithmetic.
    regions_flat = image_local.reshape(-1, args.dim)
    word_features = text_local[mask]
    words = word_features.shape[0]

    def gemms():
        scores = (word_features @ regions_flat.T).reshape(words, args.batch_size, args.regions).transpose(0, 1)
        context = torch.bmm(scores, image_local)
        grad_scores = torch.bmm(context, image_local.mT)
        torch.bmm(scores.mT, context), torch.bmm(grad_scores, image_local).sum(0), grad_scores.mT @ word_features

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}, "
          f"{args.regions} regions, dim {args.dim}, report lengths: {source}: mean {lengths.float().mean():.1f}, "
          f"median {lengths.median().item()}, max {lengths.max().item()}, {words} words in all")
    times = {name: [] for name in [*losses, "gemms"]}
    results = {}
    for repeat in range(args.repeats + 1):  # round 0 warms up and is not counted
        for name in times:
            seconds, result = timed(gemms if name == "gemms" else lambda: run(name))
            if name != "gemms":
                results[name] = result
            if repeat:
                times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}

    for name in losses:
        if name == "loop":
            continue
        loss_diff = (results["loop"][0] - results[name][0]).abs().item()
        grad_diff = max(
            ((a - b).abs().max() / a.abs().max()).item() for a, b in zip(results["loop"][1:], results[name][1:])
        )
        print(f"{name}: loss {results[name][0].item():.6f} (loop {results['loop'][0].item():.6f}, "
              f"|diff| {loss_diff:.1e}), max relative gradient diff {grad_diff:.1e}")
    print(f"forward+backward, median of {args.repeats} alternating runs (all runs in brackets):")
    for name in times:
        label = "the six GEMMs alone" if name == "gemms" else name
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {label}: {median[name]:.3f} s [{runs}]  loop / this = {median['loop'] / median[name]:.2f}x")
    buffers = (4 * args.regions + 2 * args.dim) * args.batch_size * words * 4 / 2**20
    print(f"batched: peak working buffers ~{buffers:.0f} MiB (4 x [images, words, regions] + 2 x [images, words, dim])")


if __name__ == "__main__":
    main()
