"""Stage ``prepare``: find the dataset, cut seeded disjoint splits, write them and a dataset card.

Everything is read, checked and described (the card) before anything is written; the splits and the card
are then written to a temporary folder that replaces ``--out`` as a whole, so a failure leaves the previous
set intact and never mixes new splits with an old card.
"""

from __future__ import annotations

import logging
from pathlib import Path

from smpq.artifacts import replace_folder, write_json
from smpq.data import CARD_FILE, dataset_card, load_dataset, make_splits, materialise_splits, save_image_set
from stages.session import parse_args, session

log = logging.getLogger("smpq.stage.prepare")


def run(params, *, raw_dir: Path, out: Path) -> dict:
    cfg = params.data
    raw = load_dataset(cfg.dataset, root=Path(cfg.root) if cfg.root else None, download_dir=raw_dir,
                       allow_download=cfg.allow_download, image_size=cfg.image_size)
    splits = make_splits(len(raw.train), len(raw.test), search_val_size=cfg.search_val_size, seed=params.seed,
                         train_size=cfg.train_size, test_size=cfg.test_size)
    image_sets = materialise_splits(raw, splits)
    card = dataset_card(raw, splits, image_sets, seed=params.seed)

    def fill(folder: Path) -> None:
        for name, images in image_sets.items():
            save_image_set(folder / f"{name}.pt", images)
        write_json(folder / CARD_FILE, card)

    replace_folder(out, fill)
    log.info("prepared %s from %s: %s", raw.name, raw.source, {k: len(v) for k, v in image_sets.items()})
    return {f"{name}_count": len(images) for name, images in image_sets.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args("prepare", ["raw", "out"], argv)
    with session("prepare", args, sections=("data",)) as s:
        metrics = run(s.params, raw_dir=args.raw, out=args.out)
        s.record(metrics, args.out / CARD_FILE)


if __name__ == "__main__":
    main()
