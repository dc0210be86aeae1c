"""Explanations of predictions: which words (or pixels) moved each prediction, by Captum attributions,
and how faithful those attributions are (a deletion test)."""
