"""Fast checks of the stage-side helpers: metric names, timings split, Shapley evaluation counting, report page."""

import numpy as np

from smpq.progress import Counted, Progress
from stages.report_html import markdown_to_html
from stages.run_info import flatten, numeric, pipeline_run_name, split_timings


def test_metric_names_flatten_as_dvc_shows_them():
    metrics = {"fp": {"top1": 0.9}, "smpq": {"top1": 0.8, "gbitops": 0.017}, "dmpq_argmax": {"meets_target": True}}
    assert flatten(metrics) == {"fp.top1": 0.9, "smpq.top1": 0.8, "smpq.gbitops": 0.017,
                                "dmpq_argmax.meets_target": True}
    assert numeric(metrics) == {"fp.top1": 0.9, "smpq.top1": 0.8, "smpq.gbitops": 0.017}  # bools are no metric


def test_timings_leave_the_history():
    history, timings = split_timings([{"epoch": 1, "val_top1": 0.5, "epoch_seconds": 2.0},
                                      {"epoch": 2, "val_top1": 0.6, "epoch_seconds": 3.0}])
    assert history == [{"epoch": 1, "val_top1": 0.5}, {"epoch": 2, "val_top1": 0.6}]
    assert timings == {"train_seconds": 5.0, "epoch_seconds": [2.0, 3.0]}


def test_parent_run_name_leads_with_what_varies():
    labels = {"smpq.budget": "avg_bits=3", "smpq.model": "resnet20", "smpq.dataset": "cifar10",
              "smpq.dvc_experiment": "lusty-fern", "mlflow.source.git.commit": "0123456789abcdef"}
    assert pipeline_run_name(labels) == "lusty-fern · avg_bits=3 · resnet20/cifar10 · 0123456"


def test_shapley_evaluations_are_counted_through_the_batched_path(caplog):
    class Game:
        def __call__(self, mask):
            return np.array([mask.sum()])

        def many(self, masks):
            return [self(m) for m in masks]

    counter = Progress(4, "shapley within_group evaluations", unit="evaluation", bar=False)
    counted = Counted(Game(), counter)
    with caplog.at_level("INFO", logger="smpq.progress"):
        assert [int(v[0]) for v in counted.many([np.ones(3, bool), np.zeros(3, bool)])] == [3, 0]
        counted(np.ones(3, bool))
        counted(np.ones(3, bool))
    assert counter.n == 4 and "100% (4/4 evaluations)" in caplog.records[-1].getMessage()
    assert not hasattr(Counted(lambda mask: mask, counter), "many")  # no batched path where the game has none


def test_report_page_inlines_its_images(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"\x89PNG fake")
    page = markdown_to_html("# Title\n\n| a | b |\n|---|---:|\n| x | 1 |\n\n![p](plot.png)\n\nText `code`.", tmp_path)
    assert "<h1>Title</h1>" in page and "<td>x</td><td>1</td>" in page and "<code>code</code>" in page
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page
