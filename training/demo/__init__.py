"""The embedded default model: a synthetic video world, the end-to-end training chain, the evaluator."""
