"""`ray job submit` entrypoints (pretraining, adaptation, batch embedding) and the demo main job."""
