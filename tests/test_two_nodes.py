"""A 2-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and one more node),
with one training worker per node."""

from __future__ import annotations

import os

import pytest

from elmo_core.sample_text import pydoc_sentences
from preprocessing.config import PreprocessConfig
from preprocessing.dataset import load_vocabulary
from workflows.config import TrainJobConfig

ray = pytest.importorskip("ray")


def test_one_worker_per_node(tmp_path):
    from ray.cluster_utils import Cluster

    from preprocessing.pipeline import run_preprocess
    from workflows.pretrain import model_options
    from workflows.training import run_stage, unique_name

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        (tmp_path / "corpus").mkdir()
        (tmp_path / "corpus" / "a.txt").write_text("".join(" ".join(s) + "\n" for s in pydoc_sentences(limit=300)))
        run_preprocess([str(tmp_path / "corpus")], str(tmp_path / "data"),
                       PreprocessConfig(tokenizer="whitespace", min_count=1, validation_fraction=0.1),
                       log=lambda m: None)
        vocab = load_vocabulary(str(tmp_path / "data"))
        job = TrainJobConfig(data=str(tmp_path / "data"), max_steps=2, batch_tokens=600, num_workers=2,
                             placement_strategy="STRICT_SPREAD", eval_every=2, checkpoint_every=2, report_every=1,
                             eval_max_sentences=30)
        result = run_stage(job, vocab, str(tmp_path / "storage"), unique_name("two-nodes"),
                           model_config=model_options("tiny", len(vocab)))
        assert result.final["num_nodes"] == 2 and result.final["num_workers"] == 2
        assert result.final["step"] == 2 and result.final["val_ppl"] > 1
    finally:
        ray.shutdown()
        cluster.shutdown()
