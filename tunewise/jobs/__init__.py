"""The jobs: each command of tunewise as one short function over a prepared plan (train, check, audits)."""
