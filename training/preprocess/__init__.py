"""Data preprocessing for video DiT training: scene split, text / motion / aesthetic filters,
captioning and training metadata, each stage resumable and shardable (see ``cli.py``)."""
