"""`ray job submit` entrypoints: preprocessing, pretraining, adaptation, batch embedding
(`embed`) and scheduled exactly-once embedding (`schedule`); and the demo main job."""
