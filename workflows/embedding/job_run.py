"""An embedding job's MLflow run (`tracking.start_embedding_run`), kept best-effort: MLflow out of
reach never costs embedding work. The run is opened when there is work to do (a reused
`embed-corpus` output or an `embed-new` tick with nothing new opens none), before embedding, so
that its id can go into the manifest / ledger entries; if it cannot be opened the job embeds
anyway, warns, and records no run id. Local models log a run only where ``MLFLOW_TRACKING_URI``
is set (`tracking.embedding_runs_enabled`)."""

from __future__ import annotations


class EmbeddingRun:
    """``run_id`` is None when no run is logged (disabled, or MLflow failed: warned through ``say``)."""

    def __init__(self, job: str, model, inputs: list[str], output: str, params: dict, say) -> None:
        from workflows.registry import tracking

        self.say = say
        self.run_id = None
        if not tracking.embedding_runs_enabled(model.source):
            return
        try:
            self.run_id = tracking.start_embedding_run(job, model.describe(), inputs, output, params)
        except Exception as exc:  # noqa: BLE001 - any MLflow failure: embed anyway
            say(f"[embed] WARNING: no MLflow run for this job ({tracking.tracking_uri()}: {exc}); embedding anyway")

    def finish(self, counts: dict, seconds: float, status: str = "FINISHED") -> None:
        from workflows.registry import tracking

        if self.run_id is None:
            return
        try:
            tracking.finish_embedding_run(self.run_id, counts, seconds, status)
            self.say(f"[embed] MLflow run {self.run_id} ({tracking.EMBED_EXPERIMENT})")
        except Exception as exc:  # noqa: BLE001 - the embeddings are committed already
            self.say(f"[embed] WARNING: MLflow run {self.run_id} not finished ({exc})")
