"""Search an image index (`python -m alta_hf.evaluation.embed`) with a sentence: cosine similarity between the query's ALTA
text embedding and every image embedding.

    python -m alta_hf.evaluation.search --index OUT --query "small left pleural effusion" [--top-k 10] [--model M]
        [--contact-sheet hits.png] [--json]

Prints rank, score and path of the best `--top-k` images (`--json`: one JSON list); `--contact-sheet` also writes a
PNG grid of the hits with their rank and score. The model defaults to the one that built the index.
"""

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["contact_sheet", "main", "search_index"]

_THUMBNAIL = 224
_CAPTION = 18
_COLUMNS = 5


def search_index(index, query_embedding, top_k: int) -> list[dict]:
    """The `top_k` most similar images of an `ImageIndex` to one unnormalised text embedding `(dim,)`."""
    import torch.nn.functional as F

    images = F.normalize(index.embeddings.float(), dim=-1)
    scores = images @ F.normalize(query_embedding.float().reshape(-1), dim=0)
    best = scores.topk(min(top_k, len(index.paths)))
    return [{"rank": rank + 1, "score": float(score), "path": index.paths[i]}
            for rank, (score, i) in enumerate(zip(best.values.tolist(), best.indices.tolist()))]


def contact_sheet(hits: list[dict], output) -> Path:
    """A PNG grid of the hits' images (as `load_radiograph` reads them), each captioned with its rank and score."""
    from PIL import Image, ImageDraw, ImageOps

    from alta_hf.processing import RadiographLoadError, load_radiograph

    columns = min(_COLUMNS, len(hits))
    rows = -(-len(hits) // columns)
    sheet = Image.new("L", (columns * _THUMBNAIL, rows * (_THUMBNAIL + _CAPTION)), 0)
    draw = ImageDraw.Draw(sheet)
    for position, hit in enumerate(hits):
        x, y = (position % columns) * _THUMBNAIL, (position // columns) * (_THUMBNAIL + _CAPTION)
        try:
            image = ImageOps.pad(load_radiograph(hit["path"]).convert("L"), (_THUMBNAIL, _THUMBNAIL), color=0)
            sheet.paste(image, (x, y + _CAPTION))
        except RadiographLoadError:  # moved or damaged since indexing: the caption says so
            draw.text((x + 4, y + _CAPTION + 4), "unreadable", fill=255)
        draw.text((x + 4, y + 3), f"#{hit['rank']} {hit['score']:.3f} {Path(hit['path']).name}"[:36], fill=255)
    output = Path(output)
    temporary = output.with_name(f".{output.stem}.tmp{os.getpid()}.png")
    sheet.save(temporary)
    temporary.replace(output)
    return output


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.evaluation.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="index folder written by python -m alta_hf.evaluation.embed")
    parser.add_argument("--query", required=True, action="append", help="the sentence (repeat for several queries)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--model", default=None, help="default: the model recorded in the index")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--contact-sheet", default=None, help="PNG of the hits (one query; several: -N added to the name)")
    parser.add_argument("--json", action="store_true", help="print the hits as JSON")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be positive")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    import torch

    from alta_hf.evaluation.embedding import embed_texts
    from alta_hf.evaluation.image_index import read_index
    from alta_hf.evaluation.loading import load_model_and_processor

    index = read_index(args.index)
    if not index.manifest.get("complete", False):
        print(f"warning: {args.index} is incomplete (the embedding run did not finish)", file=sys.stderr)
    model, processor, _ = load_model_and_processor(args.model or index.manifest["model"])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    queries = embed_texts(model, processor, args.query, device=device, progress=False)
    results = []
    for number, (query, embedding) in enumerate(zip(args.query, queries)):
        hits = search_index(index, embedding, args.top_k)
        results.append({"query": query, "hits": hits})
        if args.contact_sheet:
            target = Path(args.contact_sheet)
            if len(args.query) > 1:
                target = target.with_name(f"{target.stem}-{number + 1}{target.suffix}")
            results[-1]["contact_sheet"] = str(contact_sheet(hits, target))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"query: {result['query']}")
            for hit in result["hits"]:
                print(f"{hit['rank']:>4}  {hit['score']:.4f}  {hit['path']}")
            if "contact_sheet" in result:
                print(f"contact sheet: {result['contact_sheet']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
