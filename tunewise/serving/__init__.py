"""Using a fine-tuned model: `load(run)` and `FineTunedModel.predict / evaluate`."""
