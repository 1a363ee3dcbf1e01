"""`ray job submit` entrypoints (preprocessing, pretraining, adaptation) and the demo main job;
batch and scheduled embedding are not built yet."""
