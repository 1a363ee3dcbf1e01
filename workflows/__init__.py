"""`ray job submit` entrypoints: preprocessing, pretraining, adaptation, batch embedding
(`embed`) and scheduled exactly-once embedding (`schedule`), registering a run's model
(`register`); and the demo main job."""
