"""Epoch time of the paper's backbone sizes on the ROCLING training files, full vs LoRA (GPU, bf16).

    python bench/gpu_epochs.py --data DIR [--batch-size 16] [--epochs 1] [--only bert-base]

Scratch backbones (random weights, real architectures and parameter counts): BERT base,
RoBERTa large (hfl's chinese-roberta-wwm-ext-large is a BERT architecture) and DeBERTa-v2
xlarge (Erlangshen 710M: 24 layers, 1536 wide). One training epoch on 80% of the two public
training files (the paper's split), then dev evaluation; prints a markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BACKBONES = {
    "bert-base": ("bert", "base"),
    "roberta-large": ("bert", "large"),
    "deberta-xlarge": ("deberta-v2", "xlarge"),
}
PAPER_MIN = {"bert-base": (30, 25), "roberta-large": (67, 53), "deberta-xlarge": (105, 82)}  # full, LoRA at batch 1


def main() -> None:
    import torch

    from ablate.data.encode import encode, padding_fraction, batches
    from ablate.data.readers import read_conll, read_jsonl
    from ablate.data.splits import split
    from ablate.data.tags import entity_types, label_list, repair_tags
    from ablate.losses import build_loss
    from ablate.models import count_parameters, load_model, prepare_backbone
    from ablate.models.heads import LinearHead
    from ablate.spec import BackboneSpec, TrainSpec
    from ablate.trainer import Split, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=list(BACKBONES))
    ap.add_argument("--finetune", nargs="*", default=["full", "lora"])
    ap.add_argument("--out", type=Path, default=Path("bench/out/gpu_epochs.json"))
    args = ap.parse_args()

    sents = read_jsonl(args.data / "healthner_test.jsonl") + read_conll(args.data / "rocling22_chner_truth.txt", "wa")
    sents = repair_tags(sents, "rocling").sentences
    tr, dv = split(sents, 0.2, seed=0)
    labels = label_list(entity_types(tr))
    l2i = {t: i for i, t in enumerate(labels)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            family, shape = BACKBONES[name]
            path = prepare_backbone(BackboneSpec(scratch=family, shape=shape), [s.chars for s in tr], Path(tmp) / name)
            for ft in args.finetune:
                torch.manual_seed(1)
                model, tok = load_model(path, labels, ft)
                counts = count_parameters(model)
                w_tr, w_dv = encode(tr, tok, l2i, 256), encode(dv, tok, l2i, 256)
                pad = padding_fraction(w_tr, batches(w_tr, args.batch_size, shuffle=True, seed=1))
                lr = 1e-4 if ft == "lora" else 3e-5
                s = TrainSpec(lr=lr, epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=64, precision="auto")
                head = LinearHead(build_loss("ce", len(labels), s))
                t0 = time.perf_counter()
                res = train(model, head, Split(w_tr, tr), Split(w_dv, dv), None, labels, s, device,
                            Path(tmp) / f"{name}-{ft}", pad_id=tok.pad_token_id)
                wall = time.perf_counter() - t0
                h = res.history[-1]
                row = {"backbone": name, "finetune": ft, "trainable": counts.trainable, "total": counts.total,
                       "batch_size": args.batch_size, "epoch_seconds": h["epoch_seconds"],
                       "tokens_per_second": h["train_tokens_per_second"], "peak_memory_mb": h["peak_memory_mb"],
                       "padding": pad, "wall_seconds_incl_eval": wall, "bf16": res.settings["bf16"],
                       "paper_minutes_batch1": PAPER_MIN[name][0 if ft == "full" else 1]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del model
                torch.cuda.empty_cache() if device.type == "cuda" else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\n{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{len(tr)} training sentences, batch {args.batch_size}")
    print("| backbone | finetune | trainable | total | s/epoch | tokens/s | peak MB | paper min/epoch (bs 1) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['finetune']} | {r['trainable']:,} | {r['total']:,} | {r['epoch_seconds']:.1f} | "
              f"{r['tokens_per_second']:,.0f} | {r['peak_memory_mb']:,.0f} | {r['paper_minutes_batch1']} |")


if __name__ == "__main__":
    main()
