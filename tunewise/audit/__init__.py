"""The data check (`tunewise check`): what is wrong with the data, found before training.

`runner.run_audit(config)` reads the splits the config names and runs every check:
validity and text quality, class balance, token lengths, duplicates and label conflicts,
train/evaluation leakage, label noise (confident learning) and personal data (Presidio, offline).
"""
