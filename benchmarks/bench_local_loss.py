"""Batched local (GLoRIA-style) loss vs the official per-report loop: forward + backward, same run, same inputs.

    python -m benchmarks.bench_local_loss                    # batch 96, base shapes, realistic report lengths
    python -m benchmarks.bench_local_loss --lengths full     # every report 127 words (the worst case)

Shapes default to the base model: 196 local regions (4 views x 49 visible patches), up to 127 words per report
([SEP] included), 128-d projections. Report lengths are drawn from the FINDINGS + IMPRESSION sections of the real
Indiana University reports in `shared/realdata` (read at run time; approximate WordPiece count: words and punctuation
+ [SEP], capped at 127), with one full-length and one single-word report always included; without that file a
fixed synthetic distribution is used (printed). Timings alternate between the two implementations and report the
median. `reference_local_similarities` / `reference_local_loss` are also the tests' reference.
"""

import argparse
import re
import statistics
import tarfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling_alta.losses_alta import local_contrastive_loss

REPORTS_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "reports" / "NLMCXR_reports.tgz"


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


def report_lengths(batch_size: int, max_words: int, kind: str, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    if kind == "full":
        return torch.full((batch_size,), max_words), f"all {max_words}"
    pool = []
    if REPORTS_ARCHIVE.is_file():
        with tarfile.open(REPORTS_ARCHIVE) as archive:
            for member in archive.getmembers():
                if not member.name.endswith(".xml"):
                    continue
                xml = archive.extractfile(member).read().decode("utf-8", "replace")
                text = " ".join(re.findall(r'<AbstractText Label="(?:FINDINGS|IMPRESSION)">(.*?)</AbstractText>', xml, re.S))
                if text.strip():
                    pool.append(min(len(re.findall(r"\w+|[^\w\s]", text)) + 1, max_words))
        source = f"real IU report lengths ({len(pool)} reports)"
    else:
        pool = [int(x) for x in torch.randint(12, max_words + 1, (2000,), generator=generator)]
        source = "synthetic uniform lengths (realdata not found)"
    pick = torch.randint(len(pool), (batch_size,), generator=generator)
    lengths = torch.tensor([pool[i] for i in pick])
    lengths[0], lengths[1] = max_words, 1
    return lengths, source


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
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    lengths, source = report_lengths(args.batch_size, args.max_words, args.lengths, generator)
    mask = torch.arange(args.max_words) < lengths[:, None]
    # Feature scales like the model's local projections at initialisation (norms of a few units).
    image_local = torch.randn(args.batch_size, args.regions, args.dim, generator=generator) * 0.3
    text_local = torch.randn(args.batch_size, args.max_words, args.dim, generator=generator) * 0.3
    log_temperatures = torch.full((3,), torch.log(torch.tensor(1 / 0.07)).item())

    def run(batched: bool):
        img = image_local.clone().requires_grad_()
        txt = text_local.clone().requires_grad_()
        logt = log_temperatures.clone().requires_grad_()
        if batched:
            loss = local_contrastive_loss(img, txt, mask, logt.exp())
        else:
            loss = reference_local_loss(img, txt, lengths, logt.exp())
        loss.backward()
        return loss.detach(), img.grad, txt.grad, logt.grad

    words = int(lengths.sum())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}, "
          f"{args.regions} regions, dim {args.dim}, report lengths: {source}: mean {lengths.float().mean():.1f}, "
          f"median {lengths.median().item()}, max {lengths.max().item()}, {words} words in all")
    times = {"loop": [], "batched": []}
    results = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name in ("loop", "batched"):
            seconds, results[name] = timed(lambda: run(name == "batched"))
            if repeat:
                times[name].append(seconds)
    # The six matrix products the algorithm needs (2 forward, 4 backward) at this size: a floor for any implementation.
    regions_flat = image_local.reshape(-1, args.dim)
    word_features = text_local[mask]

    def gemms():
        scores = (word_features @ regions_flat.T).reshape(words, args.batch_size, args.regions).transpose(0, 1)
        context = torch.bmm(scores, image_local)
        grad_scores = torch.bmm(context, image_local.mT)
        torch.bmm(scores.mT, context), torch.bmm(grad_scores, image_local).sum(0), grad_scores.mT @ word_features

    gemm_seconds = statistics.median(timed(gemms)[0] for _ in range(args.repeats))

    loop, batched = statistics.median(times["loop"]), statistics.median(times["batched"])
    loss_diff = (results["loop"][0] - results["batched"][0]).abs().item()
    grad_diff = max(
        ((a - b).abs().max() / a.abs().max()).item() for a, b in zip(results["loop"][1:], results["batched"][1:])
    )
    buffers_mb = 3 * args.batch_size * words * args.regions * 4 / 2**20
    print(f"loss: loop {results['loop'][0].item():.6f}, batched {results['batched'][0].item():.6f}, |diff| {loss_diff:.2e}; "
          f"max relative gradient diff {grad_diff:.2e}")
    print(f"forward+backward, median of {args.repeats}: loop {loop:.3f} s {['%.2f' % t for t in times['loop']]}, "
          f"batched {batched:.3f} s {['%.2f' % t for t in times['batched']]}, speed-up {loop / batched:.2f}x")
    print(f"the six GEMMs alone: {gemm_seconds:.3f} s = {gemm_seconds / loop:.0%} of the loop's time "
          f"(bound on any speed-up: {loop / gemm_seconds:.2f}x); batched working buffers ~{buffers_mb:.0f} MiB")


if __name__ == "__main__":
    main()
